"""The web chat end to end: a real daphne, real websocket clients, the demo directory."""

import asyncio
import hashlib
import hmac
import json
import time

import pytest
from websockets.asyncio.client import connect

from tests.e2e.conftest import AGENT, IDENTITY_SECRET


class Client:
    def __init__(self, socket) -> None:
        self.socket = socket

    async def send(self, frame: dict) -> None:
        await self.socket.send(json.dumps(frame))

    async def receive(self, timeout: float = 10) -> dict:
        return json.loads(await asyncio.wait_for(self.socket.recv(), timeout))

    async def receive_until(self, predicate, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.receive(max(0.01, deadline - time.monotonic()))
            if predicate(frame):
                return frame


def _identified(conversation_id: str, event: str = "identified"):
    return lambda f: (
        f["type"] == "conversation"
        and f["event"] == event
        and f["conversation"]["id"] == conversation_id
    )


@pytest.fixture
def agent_cookie(server) -> str:
    return server.session_cookie(AGENT)


@pytest.fixture
async def sockets(server, agent_cookie):
    opened = []

    async def visitor() -> Client:
        socket = await connect(f"{server.ws_url}/ws/chat/", origin=server.origin)
        opened.append(socket)
        return Client(socket)

    async def console() -> Client:
        socket = await connect(
            f"{server.ws_url}/ws/console/",
            origin=server.origin,
            additional_headers={"Cookie": agent_cookie},
        )
        opened.append(socket)
        client = Client(socket)
        snapshot = await client.receive()
        assert snapshot["type"] == "snapshot"
        return client

    yield visitor, console
    for socket in opened:
        await socket.close()


async def _start(visitor: Client, email: str, **extra) -> dict:
    await visitor.send({"type": "start", "email": email, **extra})
    started = await visitor.receive()
    assert started["type"] == "started", started
    return started


async def test_a_known_visitor_shows_as_their_directory_name(sockets):
    new_visitor, new_console = sockets
    console = await new_console()
    visitor = await new_visitor()
    started = await _start(visitor, "Anna.Svensson@NordicBikes.se", name="Anna")
    frame = await console.receive_until(_identified(started["conversation_id"]))
    identity = frame["conversation"]["identity"]
    assert identity["status"] == "matched"
    assert identity["display_name"] == "Anna Maria Svensson"
    assert identity["contact"]["external_id"] == "CRM-1001"
    with pytest.raises(TimeoutError):
        await visitor.receive(timeout=0.5)  # nothing about who they are reaches the visitor


async def test_unmatched_and_ambiguous_visitors(sockets):
    new_visitor, new_console = sockets
    console = await new_console()
    stranger = await _start(await new_visitor(), "someone.new@example.org")
    frame = await console.receive_until(_identified(stranger["conversation_id"]))
    assert frame["conversation"]["identity"]["status"] == "unmatched"
    assert frame["conversation"]["identity"]["display_name"] == "someone.new@example.org"

    shared = await _start(await new_visitor(), "support@nordicbikes.se")
    frame = await console.receive_until(_identified(shared["conversation_id"]))
    identity = frame["conversation"]["identity"]
    assert identity["status"] == "ambiguous"
    assert sorted(c["name"] for c in identity["candidates"]) == ["Lars Berg", "Sofia Ek"]


async def test_a_signed_visitor_is_verified_and_a_forged_signature_refused(sockets):
    new_visitor, new_console = sockets
    console = await new_console()
    proof = hmac.new(IDENTITY_SECRET.encode(), b"oliver@hughes-daughters.co.uk", hashlib.sha256)
    signed = await _start(
        await new_visitor(), "Oliver@Hughes-Daughters.co.uk", identity_hash=proof.hexdigest()
    )
    frame = await console.receive_until(_identified(signed["conversation_id"]))
    assert frame["conversation"]["identity"]["verified"] is True

    forger = await new_visitor()
    await forger.send(
        {
            "type": "start",
            "email": "amelia.clarke@example.co.uk",
            "identity_hash": proof.hexdigest(),
        }
    )
    error = await forger.receive()
    assert (error["type"], error["code"]) == ("error", "invalid_identity_hash")


async def test_resume_after_a_dropped_connection_loses_nothing(server, sockets):
    new_visitor, new_console = sockets
    visitor = await new_visitor()
    started = await _start(visitor, "hugo.lefevre@example.fr")
    conversation_id = started["conversation_id"]
    acked = []
    for n in range(3):
        await visitor.send({"type": "message", "text": f"question {n}", "client_msg_id": f"q{n}"})
        acked.append((await visitor.receive())["message_id"])
    # The connection drops without a closing handshake, then an unacknowledged
    # message is in flight.
    visitor.socket.transport.abort()

    console = await new_console()
    await console.send({"type": "watch", "conversation_id": conversation_id})
    history = [await console.receive_until(lambda f: f["type"] == "message") for _ in acked]
    assert [m["message"]["message_id"] for m in history] == acked
    for text in ("Hello Hugo", "How can we help?"):
        await console.send({"type": "reply", "conversation_id": conversation_id, "text": text})
        await console.receive_until(lambda f: f["type"] == "ack")

    again = await new_visitor()
    await again.send({"type": "resume", "token": started["token"], "after": acked[-1]})
    assert (await again.receive())["conversation_id"] == conversation_id
    replies = [await again.receive(), await again.receive()]
    assert [r["text"] for r in replies] == ["Hello Hugo", "How can we help?"]
    # The message whose ack was lost is sent again under the same client id: stored once.
    await again.send({"type": "message", "text": "question 2", "client_msg_id": "q2"})
    assert (await again.receive())["message_id"] == acked[2]


async def test_an_admin_adding_the_visitor_names_them_on_the_console(server, sockets):
    new_visitor, new_console = sockets
    console = await new_console()
    started = await _start(await new_visitor(), "walk.in@example.net")
    await console.receive_until(_identified(started["conversation_id"]))

    server.add_contact_in_admin("Walter Inn", "Walk.In@example.net", "GB")
    frame = await console.receive_until(_identified(started["conversation_id"], "updated"))
    assert frame["conversation"]["identity"]["display_name"] == "Walter Inn"
    assert frame["conversation"]["identity"]["status"] == "matched"


async def test_import_directory_from_the_command_line_updates_open_chats(server, sockets, tmp_path):
    new_visitor, new_console = sockets
    console = await new_console()
    started = await _start(await new_visitor(), "bulk.loaded@example.com")
    await console.receive_until(_identified(started["conversation_id"]))
    csv_file = tmp_path / "more.csv"
    csv_file.write_text(
        "external_id,name,company,country,emails,phones,chat_ids\n"
        "E2E-1,Bulk Loaded,Imports Ltd,GB,bulk.loaded@example.com,,\n"
    )
    await asyncio.to_thread(server.manage, "import_directory", str(csv_file), "--no-progress")
    frame = await console.receive_until(_identified(started["conversation_id"], "updated"))
    assert frame["conversation"]["identity"]["display_name"] == "Bulk Loaded"


async def test_consoles_need_a_signed_in_agent(server):
    async with connect(f"{server.ws_url}/ws/console/", origin=server.origin) as anonymous:
        await anonymous.wait_closed()
        assert anonymous.close_code == 4401
