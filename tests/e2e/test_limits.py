"""The limits against a real daphne: behind a trusted proxy (X-Forwarded-For),
refused with their SPEC codes, and the server goes on serving everyone else."""

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import EMAIL_TOKEN, SINCH_WEBHOOK_SECRET, running_server

LIMITS = {
    "CP_WEBCHAT_STARTS_PER_MINUTE": "2",
    "CP_WS_MAX_SOCKETS_PER_ADDRESS": "3",
    "CP_TRUSTED_PROXIES": "127.0.0.1",  # the test plays the proxy
    "CP_WS_MAX_FRAME_BYTES": "4096",
    "CP_WEBHOOK_MAX_BYTES": "2048",
    "EMAIL_INBOUND_MAX_BYTES": "4096",
    "EMAIL_INBOUND_TOKEN": EMAIL_TOKEN,
    "SINCH_CONVERSATION_WEBHOOK_SECRET": SINCH_WEBHOOK_SECRET,
}


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("cpweb-e2e-limits"), LIMITS) as instance:
        yield instance


@pytest.fixture
async def visitor_from(limited_server):
    opened = []

    async def open_socket(address: str):
        socket = await connect(
            f"{limited_server.ws_url}/ws/chat/",
            origin=limited_server.origin,
            additional_headers={"X-Forwarded-For": address},
        )
        opened.append(socket)
        return socket

    yield open_socket
    for socket in opened:
        await socket.close()


async def _ask(socket, frame: dict | str) -> dict:
    await socket.send(frame if isinstance(frame, str) else json.dumps(frame))
    return json.loads(await asyncio.wait_for(socket.recv(), 5))


async def test_new_chats_per_visitor_address_behind_the_proxy(visitor_from):
    chats = []
    for n in range(2):
        socket = await visitor_from("198.51.100.1")
        started = await _ask(socket, {"type": "start", "email": f"v{n}@example.com"})
        assert started["type"] == "started"
        chats.append((socket, started))
    third = await visitor_from("198.51.100.1")
    refused = await _ask(third, {"type": "start", "email": "v2@example.com"})
    assert refused["code"] == "rate_limited"
    # The refused socket lives on: it may still take up a chat it already has.
    resumed = await _ask(third, {"type": "resume", "token": chats[0][1]["token"]})
    assert resumed["type"] == "started"
    # The chats already open still store and acknowledge messages.
    ack = await _ask(chats[1][0], {"type": "message", "text": "hi", "client_msg_id": "m1"})
    assert ack["type"] == "ack"
    # Another visitor behind the same proxy has a limit of their own.
    other = await visitor_from("198.51.100.2")
    assert (await _ask(other, {"type": "start", "email": "o@example.com"}))["type"] == "started"


async def test_open_sockets_per_address_and_oversized_frames(visitor_from):
    sockets = [await visitor_from("198.51.100.3") for _ in range(3)]
    fourth = await visitor_from("198.51.100.3")
    refusal = json.loads(await asyncio.wait_for(fourth.recv(), 5))
    assert refusal["code"] == "too_many_connections"
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(fourth.recv(), 5)
    assert closed.value.rcvd.code == 4429

    big = await _ask(sockets[0], json.dumps({"type": "start", "email": "x" * 5000}))
    assert big["code"] == "too_large"
    started = await _ask(sockets[0], {"type": "start", "email": "fine@example.com"})
    assert started["type"] == "started"

    await sockets[1].close()
    await asyncio.sleep(0.3)
    fifth = await visitor_from("198.51.100.3")
    assert (await _ask(fifth, {"type": "start", "email": "f@example.com"}))["type"] == "started"


async def test_oversized_webhook_bodies_get_413_and_the_next_request_is_served(limited_server):
    async with httpx.AsyncClient(base_url=limited_server.base_url, timeout=10) as client:
        auth = {"Authorization": f"Bearer {EMAIL_TOKEN}", "Content-Type": "message/rfc822"}
        mail = b"From: Zoe <zoe@example.com>\r\nSubject: hi\r\n\r\nHello\r\n"
        too_big = await client.post("/webhooks/email/", content=mail + b"x" * 5000, headers=auth)
        assert (too_big.status_code, too_big.json()["error"]) == (413, "too_large")
        sinch = await client.post(
            "/webhooks/sinch/conversation/", content=b"{" + b" " * 3000 + b"}",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert (sinch.status_code, sinch.json()["error"]) == (413, "too_large")
        fine = await client.post("/webhooks/email/", content=mail, headers=auth)
        assert fine.status_code == 200, fine.text


async def test_a_frame_over_daphnes_own_cap_closes_only_that_socket(visitor_from):
    # daphne drops a socket whose message passes 1 MiB (its own cap, before the
    # message is buffered whole); everything under it meets CP_WS_MAX_FRAME_BYTES.
    socket = await visitor_from("198.51.100.4")
    with pytest.raises(ConnectionClosed):
        # daphne may close while the frame is still being written (send
        # raises) or after it arrived (recv raises): either way, closed.
        await socket.send("x" * (2 * 1024 * 1024))
        await asyncio.wait_for(socket.recv(), 10)
    fresh = await visitor_from("198.51.100.4")
    assert (await _ask(fresh, {"type": "start", "email": "n@example.com"}))["type"] == "started"
