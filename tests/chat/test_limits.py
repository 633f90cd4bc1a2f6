"""Limits on one client address and one socket: refused with their SPEC error
code, the socket and the server live on, nothing already stored is lost."""

import asyncio

import pytest
from django.test import override_settings

from chat.limits import client_address, parse_networks
from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)

VISITOR_ADDRESS = "203.0.113.7"
NEIGHBOUR_ADDRESS = "203.0.113.8"
PROXY = "10.0.0.5"


async def _start(connect, email, **socket_options):
    visitor = await connect("/ws/chat/", **socket_options)
    await visitor.send({"type": "start", "email": email})
    return visitor, await visitor.receive()


# --- New chats a minute per address --------------------------------------------------


@override_settings(CP_WEBCHAT_STARTS_PER_MINUTE=3)
async def test_new_chats_from_one_address_are_limited_and_its_chats_live_on(connect):
    started = []
    for n in range(3):
        visitor, frame = await _start(connect, f"v{n}@example.com", client=VISITOR_ADDRESS)
        assert frame["type"] == "started"
        started.append(visitor)

    refused, frame = await _start(connect, "v3@example.com", client=VISITOR_ADDRESS)
    assert frame["type"] == "error"
    assert frame["code"] == "rate_limited"
    assert "minute" in frame["message"]
    # The refused socket lives on and is told the usual things.
    await refused.send({"type": "message", "text": "hello?"})
    assert (await refused.receive())["code"] == "not_started"
    # The chats already open keep working: messages are stored and acked.
    await started[0].send({"type": "message", "text": "still here", "client_msg_id": "a"})
    assert (await started[0].receive())["type"] == "ack"
    # Another address is not held up by this one.
    _, frame = await _start(connect, "n@example.com", client=NEIGHBOUR_ADDRESS)
    assert frame["type"] == "started"

    assert await Conversation.objects.acount() == 4
    assert await Message.objects.filter(text="still here").aexists()


@override_settings(CP_WEBCHAT_STARTS_PER_MINUTE=2)
async def test_a_resume_is_not_a_new_chat(connect):
    _, first = await _start(connect, "a@example.com", client=VISITOR_ADDRESS)
    await _start(connect, "b@example.com", client=VISITOR_ADDRESS)
    again = await connect("/ws/chat/", client=VISITOR_ADDRESS)
    await again.send({"type": "resume", "token": first["token"]})
    assert (await again.receive())["type"] == "started"


@override_settings(CP_WEBCHAT_STARTS_PER_MINUTE=2)
async def test_invalid_starts_do_not_use_up_the_limit(connect):
    visitor = await connect("/ws/chat/", client=VISITOR_ADDRESS)
    for _ in range(5):
        await visitor.send({"type": "start", "email": "typo@"})
        assert (await visitor.receive())["code"] == "invalid_email"
    await visitor.send({"type": "start", "email": "fixed@example.com"})
    assert (await visitor.receive())["type"] == "started"


@override_settings(CP_WEBCHAT_STARTS_PER_MINUTE=1)
async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(connect):
    spoofed = [(b"x-forwarded-for", b"198.51.100.1")]
    _, frame = await _start(connect, "a@example.com", client=VISITOR_ADDRESS, headers=spoofed)
    assert frame["type"] == "started"
    other = [(b"x-forwarded-for", b"198.51.100.2")]
    _, frame = await _start(connect, "b@example.com", client=VISITOR_ADDRESS, headers=other)
    assert frame["code"] == "rate_limited"  # still counted against the real peer


async def test_behind_a_trusted_proxy_each_visitor_has_their_own_limit(connect, settings):
    # (one way of overriding settings per test: mixed, they restore each other's)
    settings.CP_WEBCHAT_STARTS_PER_MINUTE = 1
    settings.CP_TRUSTED_PROXIES = parse_networks(["10.0.0.0/24"])
    first = [(b"x-forwarded-for", b"198.51.100.1")]
    second = [(b"x-forwarded-for", b"198.51.100.2")]
    _, frame = await _start(connect, "a@example.com", client=PROXY, headers=first)
    assert frame["type"] == "started"
    _, frame = await _start(connect, "b@example.com", client=PROXY, headers=second)
    assert frame["type"] == "started"
    _, frame = await _start(connect, "c@example.com", client=PROXY, headers=first)
    assert frame["code"] == "rate_limited"


def test_the_client_is_the_nearest_untrusted_hop(settings):
    settings.CP_TRUSTED_PROXIES = parse_networks(["10.0.0.0/24", "::1"])

    def scope(peer, forwarded=None):
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        return {"client": [peer, 1], "headers": headers}

    # A visitor who sends their own X-Forwarded-For cannot choose their address:
    # the proxy appends the one it saw, and that is the one taken.
    assert client_address(scope(PROXY, "6.6.6.6, 198.51.100.1")) == "198.51.100.1"
    assert client_address(scope(PROXY, "198.51.100.1, 10.0.0.9")) == "198.51.100.1"
    assert client_address(scope("::1", "2001:db8::5")) == "2001:db8::5"
    assert client_address(scope(PROXY)) == PROXY
    assert client_address(scope(VISITOR_ADDRESS, "198.51.100.1")) == VISITOR_ADDRESS
    assert client_address({"headers": []}) == "unknown"


# --- Open sockets per address ----------------------------------------------------------


@override_settings(CP_WS_MAX_SOCKETS_PER_ADDRESS=2)
async def test_open_sockets_per_address_are_limited(connect):
    first, _ = await _start(connect, "a@example.com", client=VISITOR_ADDRESS)
    await connect("/ws/chat/", client=VISITOR_ADDRESS)

    third = await connect("/ws/chat/", client=VISITOR_ADDRESS)
    refusal = await third.receive()
    assert refusal["code"] == "too_many_connections"
    closed = await third.communicator.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": 4429}

    # The sockets already open live on; another address is not affected.
    await first.send({"type": "message", "text": "hi", "client_msg_id": "1"})
    assert (await first.receive())["type"] == "ack"
    _, other = await _start(connect, "b@example.com", client=NEIGHBOUR_ADDRESS)
    assert other["type"] == "started"

    # A closed socket gives its place back.
    await first.communicator.disconnect()
    _, again = await _start(connect, "c@example.com", client=VISITOR_ADDRESS)
    assert again["type"] == "started", again


@override_settings(CP_WS_MAX_SOCKETS_PER_ADDRESS=1)
async def test_frames_sent_on_a_refused_socket_are_dropped(connect):
    await connect("/ws/chat/", client=VISITOR_ADDRESS)
    refused = await connect("/ws/chat/", client=VISITOR_ADDRESS)
    await refused.send({"type": "start", "email": "sneaky@example.com"})
    assert (await refused.receive())["code"] == "too_many_connections"
    assert (await refused.communicator.receive_output(timeout=3))["code"] == 4429
    assert await refused.nothing()
    assert not await Conversation.objects.aexists()


@override_settings(CP_WS_MAX_SOCKETS_PER_ADDRESS=1)
async def test_agent_consoles_are_not_counted(connect, agent_cookie):
    for _ in range(3):
        console = await connect("/ws/console/", cookie=agent_cookie, client=VISITOR_ADDRESS)
        assert (await console.receive())["type"] == "snapshot"
    _, frame = await _start(connect, "a@example.com", client=VISITOR_ADDRESS)
    assert frame["type"] == "started"


# --- Per-socket limits on the console too ------------------------------------------------


async def test_console_frames_over_the_size_limit_are_refused(connect, agent_cookie):
    visitor, started = await _start(connect, "a@example.com")
    console = await connect("/ws/console/", cookie=agent_cookie)
    await console.receive()  # snapshot
    await console.send_text('{"type": "reply", "text": "' + "x" * 20_000 + '"}')
    error = await console.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "too_large"
    await console.send({"type": "reply", "conversation_id": started["conversation_id"],
                        "text": "x" * 4001, "client_msg_id": "long"})  # fmt: skip
    error = await console.receive_until(lambda f: f["type"] == "error")
    assert (error["code"], error["client_msg_id"]) == ("too_large", "long")
    await console.send({"type": "reply", "conversation_id": started["conversation_id"],
                        "text": "fits", "client_msg_id": "ok"})  # fmt: skip
    assert (await console.receive_until(lambda f: f["type"] == "ack"))["client_msg_id"] == "ok"
    assert (await visitor.receive_until(lambda f: f["type"] == "message"))["text"] == "fits"
    assert await Message.objects.acount() == 1


@override_settings(CP_WS_FRAMES_PER_SECOND=1, CP_WS_FRAME_BURST=2)
async def test_a_console_flood_is_rate_limited_and_the_console_lives_on(connect, agent_cookie):
    _, started = await _start(connect, "a@example.com")
    console = await connect("/ws/console/", cookie=agent_cookie)
    await console.receive()  # snapshot
    for n in range(5):
        await console.send({"type": "unwatch", "conversation_id": str(n)})
    error = await console.receive_until(lambda f: f["type"] == "error")
    assert error["code"] == "rate_limited"
    await asyncio.sleep(2.1)
    await console.send({"type": "watch", "conversation_id": started["conversation_id"]})
    await console.send({"type": "reply", "conversation_id": started["conversation_id"],
                        "text": "calm", "client_msg_id": "calm"})  # fmt: skip
    assert (await console.receive_until(lambda f: f["type"] == "ack"))["client_msg_id"] == "calm"
