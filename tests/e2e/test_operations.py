"""Operations against real daphne processes: /healthz with its database or its
channel layer unreachable, and with consoles connected."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.e2e.conftest import AGENT, ROOT, _free_port


@contextmanager
def bare_daphne(tmp_path: Path, **env: str) -> Iterator[str]:
    """daphne with the given settings and nothing prepared (no migration, no data)."""
    port = _free_port()
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))
        and k not in {"DATABASE_URL", "REDIS_URL"}
    }
    environment |= {"CPWEB_VAR_DIR": str(tmp_path), "CP_HEALTH_TIMEOUT": "1", **env}
    log = (tmp_path / "daphne.log").open("w")
    daphne = subprocess.Popen(
        [str(Path(sys.executable).with_name("daphne")), "-b", "127.0.0.1", "-p", str(port),
         "cpweb.asgi:application"],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base_url}/healthz", timeout=5)
                break
            except httpx.HTTPError:
                if daphne.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "daphne.log").read_text()) from None
                time.sleep(0.2)
        yield base_url
    finally:
        daphne.terminate()
        daphne.wait(timeout=10)
        log.close()


def _closed_port() -> int:
    return _free_port()  # bound and released: nothing listens there


def test_an_unreachable_database_is_named(tmp_path):
    with bare_daphne(
        tmp_path, DATABASE_URL=f"postgres://postgres@127.0.0.1:{_closed_port()}/cpweb"
    ) as base_url:
        started = time.monotonic()
        response = httpx.get(f"{base_url}/healthz", timeout=10)
        assert time.monotonic() - started < 5
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database"]
    assert body["checks"]["database"] == {"ok": False, "error": "OperationalError"}
    assert body["checks"]["channel_layer"]["ok"] is True
    # The answer names the check, not the connection details.
    assert "127.0.0.1" not in response.text and "postgres" not in response.text


def test_an_unreachable_redis_is_named(tmp_path):
    with bare_daphne(tmp_path, REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0") as base_url:
        response = httpx.get(f"{base_url}/healthz", timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["channel_layer"]
    assert body["checks"]["database"]["ok"] is True  # SELECT 1 on a fresh SQLite file


async def test_ready_with_consoles_connected_and_pushes_flowing(server):
    cookie = server.session_cookie(AGENT)
    async with connect(
        f"{server.ws_url}/ws/console/", origin=server.origin, additional_headers={"Cookie": cookie}
    ) as console:
        await console.recv()  # the snapshot: this process's hub is listening
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            for _ in range(5):
                response = await client.get("/healthz")
                assert response.status_code == 200, response.text
                assert response.json()["checks"]["channel_layer"]["ok"] is True


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_healthz_only_answers_reads(server, method):
    assert httpx.request(method, f"{server.base_url}/healthz", timeout=10).status_code == 405
