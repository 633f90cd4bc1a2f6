"""``GET /healthz`` (SPEC §5) through the real ASGI app: the database and the
channel layer (Redis when REDIS_URL is set), up, failing and hanging."""

import asyncio
import json
import logging
import socket
import threading
import time

import pytest
from channels.layers import channel_layers, get_channel_layer
from channels.testing import HttpCommunicator

from chat.hub import get_hub
from cpweb.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def _healthz(method: str = "GET") -> tuple[int, dict]:
    communicator = HttpCommunicator(
        application, method, "/healthz", headers=[(b"host", b"localhost")]
    )
    response = await communicator.get_response(timeout=10)
    body = (
        json.loads(response["body"]) if response["status"] in {200, 503} and method == "GET" else {}
    )
    return response["status"], body


async def test_ready_when_the_database_and_the_channel_layer_answer():
    status, body = await _healthz()
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channel_layer"]["ok"] is True
    assert "failing" not in body


async def test_ready_while_the_hub_is_busy_delivering_to_consoles(connect, agent_cookie):
    # Under Redis, an earlier /healthz read its own channel and waited behind the
    # hub's blocking read until the next push came: every probe timed out once a
    # console had connected. The probe now travels through the hub itself.
    console = await connect("/ws/console/", cookie=agent_cookie)
    assert (await console.receive())["type"] == "snapshot"
    for _ in range(5):
        started = time.monotonic()
        status, body = await _healthz()
        assert status == 200, body
        assert time.monotonic() - started < 1.5


async def test_probes_leave_nothing_behind_in_the_layer():
    await _healthz()
    layer = get_channel_layer()
    hub = await get_hub()
    buffers = len(getattr(layer, "receive_buffer", getattr(layer, "channels", {})))
    for _ in range(20):
        assert (await _healthz())[0] == 200
    assert len(getattr(layer, "receive_buffer", getattr(layer, "channels", {}))) <= buffers
    assert hub._pings == {}


async def test_only_get_and_head():
    assert (await _healthz("POST"))[0] == 405
    assert (await _healthz("HEAD"))[0] == 200


@pytest.fixture
def layer_at(settings):
    """Point the channel layer at a Redis address of the test's choosing."""

    configured = settings.CHANNEL_LAYERS

    def point(url: str | None) -> None:
        """A Redis URL, or None for the layer this run is configured with."""
        settings.CHANNEL_LAYERS = (
            configured
            if url is None
            else {
                "default": {
                    "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                    "CONFIG": {"hosts": [url], "prefix": "cpweb-health-test"},
                }
            }
        )
        channel_layers.backends.clear()

    yield point
    channel_layers.backends.clear()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends


async def test_unavailable_naming_the_channel_layer_when_redis_refuses(layer_at):
    layer_at(f"redis://127.0.0.1:{_closed_port()}/0")
    status, body = await _healthz()
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["failing"] == ["channel_layer"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channel_layer"] == {"ok": False, "error": "ConnectionError"}
    layer_at(None)  # the layer is back
    assert (await _healthz())[0] == 200


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never says a word (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


async def test_a_hanging_layer_is_reported_within_the_timeout(layer_at, silent_server, settings):
    settings.CP_HEALTH_TIMEOUT = 0.5
    layer_at(f"redis://127.0.0.1:{silent_server}/0")
    started = time.monotonic()
    status, body = await _healthz()
    assert time.monotonic() - started < 2
    assert status == 503
    assert body["checks"]["channel_layer"] == {"ok": False, "error": "no answer within 0.5 s"}
    assert body["checks"]["database"]["ok"] is True
    layer_at(None)  # the hub that could not start is not left half-started
    assert (await _healthz())[0] == 200


async def test_an_idle_hub_waits_without_errors_and_still_delivers(connect, agent_cookie, caplog):
    # redis-py 8 times socket reads out after 5 s, exactly the length of the
    # hub's blocking wait: with no push for 5 s the hub's receive failed, and
    # every further idle wait failed again with a longer back-off (up to 5 s of
    # not listening), delaying pushes and failing /healthz. The layer's reads
    # now outlast the blocking wait.
    caplog.set_level(logging.WARNING, logger="chat.hub")
    console = await connect("/ws/console/", cookie=agent_cookie)
    assert (await console.receive())["type"] == "snapshot"
    await asyncio.sleep(6)
    assert [r.getMessage() for r in caplog.records if r.name == "chat.hub"] == []
    visitor = await connect("/ws/chat/")
    await visitor.send({"type": "start", "email": "idle@example.com"})
    started = time.monotonic()
    await console.receive_until(lambda f: f.get("event") == "identified", timeout=1)
    assert time.monotonic() - started < 1
    assert (await _healthz())[0] == 200
