"""The multi-worker launcher's own checks: what it refuses, the nginx configuration it writes."""

import subprocess
import tempfile

import pytest

from deploy.cluster import Cluster, ClusterError, nginx_binary, render_nginx_conf


def test_a_cluster_refuses_to_start_without_postgresql_and_redis(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(ClusterError) as refused:
        Cluster(env={"DATABASE_URL": "sqlite:///var/x.sqlite3", "REDIS_URL": ""})
    assert "DATABASE_URL=postgres://" in str(refused.value)
    assert "REDIS_URL=redis://" in str(refused.value)
    assert list(tmp_path.iterdir()) == []  # no var directory left behind


def test_a_cluster_refuses_fewer_than_one_worker():
    with pytest.raises(ClusterError, match="at least one worker"):
        Cluster(workers=0)


def test_nginx_accepts_the_configuration_the_launcher_writes(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        render_nginx_conf(
            prefix=tmp_path, listen="127.0.0.1:18080", upstreams=["127.0.0.1:1", "127.0.0.1:2"]
        )
    )
    checked = subprocess.run(
        [nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(conf),
         "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "server 127.0.0.1:2 max_fails=1" in conf.read_text()
