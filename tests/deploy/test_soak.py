"""The bounded soak (bench/soak.py), short: 70 s of load, each fault once.

The soak starts a private Redis and PostgreSQL (deploy/services.py) and a 2-worker cluster
on them, runs the contact-center load through nginx at a low rate with a worker killed,
Redis restarted and PostgreSQL restarted, then checks the database and the prober's
answers. It runs as the one command an engineer runs (a subprocess), about 90 s in all.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.services import have_private_postgres, have_private_redis

ROOT = Path(__file__).resolve().parents[2]
ON_POSTGRES = os.environ.get("DATABASE_URL", "").startswith("postgres")
ON_REDIS = bool(os.environ.get("REDIS_URL"))
SHORT = ["--duration", "70", "--fault-every", "20", "--warm-up", "5", "--visitors", "60",
         "--consoles", "6", "--starts-per-second", "2", "--messages-per-second", "10"]  # fmt: skip


@pytest.mark.skipif(
    not (ON_POSTGRES and ON_REDIS and have_private_postgres() and have_private_redis()),
    reason="needs DATABASE_URL=postgres://…, REDIS_URL, redis-server and PostgreSQL's "
    "initdb/pg_ctl",
)
def test_a_short_soak_with_each_fault_loses_no_acked_message_and_no_5xx_outside_faults(
    tmp_path,
):
    report_path = tmp_path / "soak.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    # Its own process group: a soak that has to be stopped takes its cluster,
    # Redis and PostgreSQL with it instead of leaving them running.
    soak = subprocess.Popen(
        [sys.executable, "bench/soak.py", *SHORT, "--json", str(report_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        # The soak bounds itself (each fault must recover within 60 s); this is
        # only a guard, wide enough for a machine busy with other work.
        output, _ = soak.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(soak.pid, signal.SIGKILL)
        output, _ = soak.communicate()
        pytest.fail(f"the soak did not end within 600 s; it said:\n{output}")
    assert report_path.exists(), output
    report = json.loads(report_path.read_text())

    assert [f["fault"] for f in report["faults"]] == ["worker", "redis", "postgres"], output
    assert all("NOT RECOVERED" not in f["note"] for f in report["faults"]), output
    messages = report["messages"]
    assert messages["acked"] > 300, output
    assert (messages["lost"], messages["found"]) == (0, messages["acked"]), output
    http = report["http"]
    assert http["5xx outside windows"] == 0, output
    assert http["no answer outside windows"] == 0, output
    # The faults did hit: a worker's sockets resumed elsewhere, PostgreSQL refused frames.
    assert report["counts"].get("resumes", 0) > 0, output
    assert report["error frames"].get("visitor unavailable", 0) > 0, output
