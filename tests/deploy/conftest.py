"""A real cluster: three daphne workers behind nginx, one PostgreSQL database, one Redis.

Needs ``DATABASE_URL=postgres://…`` and ``REDIS_URL``; without them these tests
skip (and under ``CI=true`` a skip is a failure, tests/conftest.py).
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from deploy.cluster import Cluster, Worker
from tests.e2e.conftest import AGENT, Server
from tests.e2e.test_webchat import Client

HAS_SERVICES = os.environ.get("DATABASE_URL", "").startswith("postgres") and bool(
    os.environ.get("REDIS_URL")
)
needs_services = pytest.mark.skipif(
    not HAS_SERVICES, reason="several workers need DATABASE_URL=postgres://… and REDIS_URL"
)

# Every test visitor comes from 127.0.0.1, and the traffic tests send in bursts.
TRAFFIC_LIMITS = {
    "CP_WEBCHAT_STARTS_PER_MINUTE": "0",
    "CP_WS_MAX_SOCKETS_PER_ADDRESS": "0",
    "CP_WS_FRAMES_PER_SECOND": "1000",
    "CP_WS_FRAME_BURST": "1000",
}


def server_at(cluster: Cluster, url: str) -> Server:
    """The e2e helpers (login, database queries) aimed at one address of the cluster."""
    return Server(base_url=url, env=cluster.env, log=Path(cluster.log_dir))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not HAS_SERVICES:
        pytest.skip("several workers need DATABASE_URL=postgres://… and REDIS_URL")
    with Cluster(workers=3, fresh_database=True, env=TRAFFIC_LIMITS) as running:
        yield running


class PatientClient(Client):
    """The e2e client with timeouts for several workers sharing two busy cores."""

    async def receive(self, timeout: float = 20) -> dict:
        return await super().receive(timeout)

    async def receive_until(self, predicate, timeout: float = 20) -> dict:  # type: ignore[no-untyped-def]
        return await super().receive_until(predicate, timeout)


class Sockets:
    """Opens visitor and console sockets on any address; closes them all at the end."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.opened: list[ClientConnection] = []
        self._cookie: str | None = None

    async def visitor(self, url: str) -> PatientClient:
        socket = await connect(f"{_ws(url)}/ws/chat/", origin=url)
        self.opened.append(socket)
        return PatientClient(socket)

    def agent_cookie(self) -> str:
        if self._cookie is None:
            self._cookie = server_at(self.cluster, self.cluster.url).session_cookie(AGENT)
        return self._cookie

    async def console(self, url: str) -> tuple[PatientClient, dict]:
        """A signed-in agent's console on ``url`` and the snapshot it opened with."""
        socket = await connect(
            f"{_ws(url)}/ws/console/",
            origin=url,
            additional_headers={"Cookie": self.agent_cookie()},
        )
        self.opened.append(socket)
        client = PatientClient(socket)
        snapshot = await client.receive(timeout=10)
        assert snapshot["type"] == "snapshot", snapshot
        return client, snapshot

    async def close(self) -> None:
        for socket in self.opened:
            await socket.close()


@pytest.fixture
async def sockets(cluster) -> Iterator[Sockets]:
    opened = Sockets(cluster)
    yield opened
    await opened.close()


def _ws(url: str) -> str:
    return url.replace("http://", "ws://")


async def start_chat(visitor: Client, email: str) -> dict:
    await visitor.send({"type": "start", "email": email})
    started = await visitor.receive(timeout=10)
    assert started["type"] == "started", started
    return started


def visitor_sockets_opened(worker: Worker) -> int:
    """Visitor websockets the worker has accepted so far (daphne's access log)."""
    return worker.log.read_text(errors="replace").count("WSCONNECT /ws/chat/")
