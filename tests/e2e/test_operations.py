"""Operations against real daphne processes: /healthz with its database or its
channel layer unreachable, and with consoles connected."""

import json
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

from tests.e2e.conftest import (
    AGENT,
    API_TOKEN,
    EMAIL_TOKEN,
    IDENTITY_SECRET,
    METRICS_TOKEN,
    ROOT,
    SINCH_VOICE_SECRET,
    SINCH_WEBHOOK_SECRET,
    _free_port,
)
from tests.e2e.test_channels import _email, _ice, _mail, _voice
from tests.metrics_scrape import Samples, scrape, value


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


# --- Metrics and the identification log on a real daphne ---------------------------------


def _scrape(url: str) -> Samples:
    return scrape(url, METRICS_TOKEN)


async def test_real_traffic_moves_the_metrics_and_logs_each_decision(server):
    before = _scrape(server.base_url)
    assert (await _voice(server, _ice("e2e-metrics-1", "+15550107777"))).status_code == 200
    assert (
        await _voice(server, _ice("e2e-metrics-2", "+15550107777"), secret="d3Jvbmc=")
    ).status_code == 401
    assert (
        await _email(server, _mail("Metric Person <metric.person@e2e.example>", "e2e-m-1"))
    ).status_code == 200
    assert (
        await _email(server, _mail("x@e2e.example", "e2e-m-2"), token="wrong")
    ).status_code == 401
    async with connect(f"{server.ws_url}/ws/chat/", origin=server.origin) as visitor:
        await visitor.send('{"type": "start", "email": "metric.visitor@e2e.example"}')
        started = json.loads(await visitor.recv())
        during = _scrape(server.base_url)
    after = _scrape(server.base_url)

    def moved(samples, name, **labels):
        return value(samples, name, **labels) - value(before, name, **labels)

    start = {"status": "unmatched", "trigger": "start"}
    assert moved(during, "cpweb_identifications_total", channel="voice", **start) == 1
    assert moved(during, "cpweb_identifications_total", channel="email", **start) == 1
    assert moved(during, "cpweb_identifications_total", channel="webchat", **start) == 1
    assert moved(during, "cpweb_identify_seconds_count", channel="voice") == 1
    assert (
        moved(
            during,
            "cpweb_webhook_rejections_total",
            webhook="sinch_voice",
            reason="invalid_signature",
        )
        == 1
    )
    assert (
        moved(during, "cpweb_webhook_rejections_total", webhook="email", reason="unauthorized") == 1
    )
    assert moved(during, "cpweb_open_sockets", kind="visitor") == 1
    assert moved(after, "cpweb_open_sockets", kind="visitor") == 0

    # daphne's own output: one JSON decision per identification, hashed, no secrets.
    deadline = time.monotonic() + 5
    while started["conversation_id"] not in server.log.read_text():
        assert time.monotonic() < deadline, "the web chat decision was never logged"
        time.sleep(0.1)
    log = server.log.read_text()
    decisions = [
        json.loads(line) for line in log.splitlines() if line.startswith('{"candidate_ids"')
    ]
    mine = [d for d in decisions if d.get("conversation_id") == started["conversation_id"]]
    assert [(d["channel"], d["status"], d["rule"], d["trigger"]) for d in mine] == [
        ("webchat", "unmatched", "no_holder", "start")
    ]
    assert len(mine[0]["identifier_hash"]) == 32
    for secret in ("metric.visitor@e2e.example", "metric.person@e2e.example", "15550107777",
                   started["token"], METRICS_TOKEN, EMAIL_TOKEN, API_TOKEN, IDENTITY_SECRET,
                   SINCH_WEBHOOK_SECRET, SINCH_VOICE_SECRET):  # fmt: skip
        assert secret not in log
