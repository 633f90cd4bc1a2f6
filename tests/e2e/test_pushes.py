"""Pushes under daphne go straight to the connection (chat.wire), and a console
that stops reading neither loses frames nor holds anyone else up."""

import asyncio
import json
import socket
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.e2e.conftest import AGENT, METRICS_TOKEN, running_server
from tests.metrics_scrape import scrape, value

# Frames as fast as the test sends them; everything else as shipped.
FAST = {"CP_WS_FRAMES_PER_SECOND": "1000", "CP_WS_FRAME_BURST": "1000"}
TEXT = "😀" * 3_900  # 15,600 bytes of UTF-8: frames with a 16-bit length, in bytes


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("cpweb-e2e-pushes"), FAST) as instance:
        yield instance


class Socket:
    def __init__(self, connection) -> None:
        self.connection = connection

    async def send(self, frame: dict) -> None:
        await self.connection.send(json.dumps(frame, ensure_ascii=False))

    async def receive(self, timeout: float = 10) -> dict:
        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def receive_until(self, predicate, timeout: float = 10) -> dict:
        async with asyncio.timeout(timeout):
            while not predicate(frame := await self.receive()):
                pass
        return frame


@pytest.fixture
async def open_socket(fast_server):
    opened = []

    async def open_socket(path: str, *, cookie: str = "", stalled: bool = False) -> Socket:
        options: dict = {"origin": fast_server.origin, "max_size": None}
        if cookie:
            options["additional_headers"] = {"Cookie": cookie}
        if stalled:
            # A console that stops reading: a small receive window, and the
            # client library stops reading after one unread frame.
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.connect(("127.0.0.1", int(fast_server.base_url.rsplit(":", 1)[1])))
            options.update(sock=raw, max_queue=1)
        connection = await connect(f"{fast_server.ws_url}{path}", **options)
        opened.append(connection)
        return Socket(connection)

    yield open_socket
    for connection in opened:
        await connection.close()


def _bytes_to_fill_the_socket_buffers() -> int:
    # The most the kernel may buffer on the server's side of one connection.
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


async def test_a_console_that_stops_reading_misses_nothing_and_holds_no_one_up(
    fast_server, open_socket
):
    cookie = fast_server.session_cookie(AGENT)
    stalled = await open_socket("/ws/console/", cookie=cookie, stalled=True)
    assert (await stalled.receive())["type"] == "snapshot"
    other = await open_socket("/ws/console/", cookie=cookie)
    assert (await other.receive())["type"] == "snapshot"
    before = scrape(fast_server.base_url, METRICS_TOKEN)

    visitor = await open_socket("/ws/chat/")
    await visitor.send({"type": "start", "email": "stalled-console@example.com"})
    conversation_id = (await visitor.receive())["conversation_id"]
    await stalled.send({"type": "watch", "conversation_id": conversation_id})

    # More than the kernel can hold for the stalled console: the server must
    # keep the rest itself, and go on serving everyone else meanwhile.
    count = _bytes_to_fill_the_socket_buffers() // len(TEXT.encode()) + 60
    for n in range(count):
        await visitor.send({"type": "message", "text": f"{n} {TEXT}", "client_msg_id": f"m{n}"})
        ack = await visitor.receive()
        assert ack["type"] == "ack" and ack["client_msg_id"] == f"m{n}", ack
    second = await open_socket("/ws/chat/")
    await second.send({"type": "start", "email": "another-visitor@example.com"})
    second_id = (await second.receive())["conversation_id"]
    started = await other.receive_until(
        lambda f: f["type"] == "conversation" and f["conversation"]["id"] == second_id
    )
    assert started["event"] == "started"

    # The stalled console reads again: every message, in order, intact.
    texts = []
    while len(texts) < count:
        frame = await stalled.receive(timeout=30)
        if frame["type"] == "message":
            assert frame["conversation_id"] == conversation_id
            texts.append(frame["message"]["text"])
    assert texts == [f"{n} {TEXT}" for n in range(count)]
    await stalled.receive_until(
        lambda f: f["type"] == "conversation" and f["conversation"]["id"] == second_id
    )

    # All of it went the direct way: no push fell back to the ASGI path.
    after = scrape(fast_server.base_url, METRICS_TOKEN)
    direct = value(after, "cpweb_push_frames_total", path="direct") - value(
        before, "cpweb_push_frames_total", path="direct"
    )
    fallback = value(after, "cpweb_push_frames_total", path="asgi") - value(
        before, "cpweb_push_frames_total", path="asgi"
    )
    assert direct >= count + 4  # the messages, two lifecycle events to two consoles
    assert fallback == 0
