"""Metrics of a multi-worker deployment: one scrape through nginx counts every
worker, and a worker that died stops counting its open sockets; and the
launcher's workers run on glibc's malloc.

Two real daphne workers share one PROMETHEUS_MULTIPROC_DIR (the launcher's
default), one PostgreSQL database and one Redis, behind nginx.
"""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from deploy.cluster import DEMO_API_TOKEN, DEMO_METRICS_TOKEN, Cluster
from tests.deploy.conftest import HAS_SERVICES, TRAFFIC_LIMITS, needs_services
from tests.metrics_scrape import Samples, scrape, value

pytestmark = needs_services


@pytest.fixture(scope="module")
def pair() -> Iterator[Cluster]:
    if not HAS_SERVICES:
        pytest.skip("several workers need DATABASE_URL=postgres://… and REDIS_URL")
    with Cluster(workers=2, fresh_database=True, env=TRAFFIC_LIMITS) as running:
        yield running


def _scrape(url: str) -> Samples:
    return scrape(url, DEMO_METRICS_TOKEN)


def test_one_scrape_through_nginx_counts_every_worker(pair):
    for worker, calls in zip(pair.workers, (2, 3), strict=True):
        for _ in range(calls):
            response = httpx.post(
                f"{worker.url}/api/identify", headers={"Authorization": f"Bearer {DEMO_API_TOKEN}"},
                json={"channel": "voice", "identifier": "46812345678"}, timeout=10,
            )  # fmt: skip
            assert response.status_code == 200
    labels = {"channel": "voice", "status": "ambiguous", "trigger": "api"}
    for url in (pair.url, pair.url, *(w.url for w in pair.workers)):  # nginx picks either
        assert value(_scrape(url), "cpweb_identifications_total", **labels) == 5


async def test_a_killed_workers_sockets_stop_counting(pair):
    sockets = [await connect(f"{w.ws_url}/ws/chat/", origin=w.url) for w in pair.workers]
    try:
        assert value(_scrape(pair.url), "cpweb_open_sockets", kind="visitor") == 2
        pair.kill_worker(1)
        assert value(_scrape(pair.workers[0].url), "cpweb_open_sockets", kind="visitor") == 1
    finally:
        for socket in sockets:
            await socket.close()
        pair.start_worker(1)
    assert value(_scrape(pair.url), "cpweb_open_sockets", kind="visitor") == 0


def test_workers_run_on_glibc_malloc_so_that_the_hubs_trim_reaches_python_objects(pair):
    # README "A bounded soak with faults": with pymalloc a worker stayed at the
    # height of its last burst; the launcher starts workers with glibc's malloc.
    for worker in pair.workers:
        environ = Path(f"/proc/{worker.pid}/environ").read_bytes().split(b"\0")
        assert b"PYTHONMALLOC=malloc" in environ
