"""The visitor and console websockets (SPEC §3, §4), through the real ASGI app."""

import asyncio

import pytest
from django.test import override_settings

from chat.models import Conversation, Message
from directory.identify import webchat_identity_hash
from directory.models import Contact
from directory.services import contact_create

pytestmark = pytest.mark.django_db(transaction=True)


def _event(name):
    return lambda frame: frame.get("type") == "conversation" and frame.get("event") == name


async def _start(connect, email="anna@example.com", **extra):
    visitor = await connect("/ws/chat/")
    await visitor.send({"type": "start", "email": email, **extra})
    started = await visitor.receive()
    assert started["type"] == "started", started
    return visitor, started


async def _console(connect, agent_cookie):
    console = await connect("/ws/console/", cookie=agent_cookie)
    snapshot = await console.receive()
    assert snapshot["type"] == "snapshot"
    return console, snapshot


# --- The main path ------------------------------------------------------------


async def test_a_visitors_email_becomes_a_name_on_the_console(connect, agent_cookie, sync):
    await sync(contact_create, name="Anna Svensson", emails=["anna@example.com"])
    console, _ = await _console(connect, agent_cookie)
    visitor, started = await _start(connect, email="Anna@Example.com", name="Anna S")

    first = await console.receive()
    identified = await console.receive()
    assert (first["event"], identified["event"]) == ("started", "identified")
    conversation = identified["conversation"]
    assert conversation["id"] == started["conversation_id"]
    assert conversation["channel"] == "webchat"
    assert conversation["state"] == "open"
    assert conversation["identity"]["status"] == "matched"
    assert conversation["identity"]["display_name"] == "Anna Svensson"
    assert conversation["identity"]["claimed_name"] == "Anna S"
    assert conversation["last_message"] is None
    assert len(started["token"]) >= 40
    assert await visitor.nothing()  # the visitor is never told who they are


async def test_unmatched_and_ambiguous_visitors_show_their_email(connect, agent_cookie, sync):
    for name in ("Lars Berg", "Sofia Ek"):
        await sync(contact_create, name=name, emails=["support@example.com"])
    console, _ = await _console(connect, agent_cookie)
    await _start(connect, email="nobody@example.com")
    unmatched = await console.receive_until(_event("identified"))
    assert unmatched["conversation"]["identity"]["status"] == "unmatched"
    assert unmatched["conversation"]["identity"]["display_name"] == "nobody@example.com"
    await _start(connect, email="SUPPORT@example.com")
    shared = await console.receive_until(_event("identified"))
    identity = shared["conversation"]["identity"]
    assert identity["status"] == "ambiguous"
    assert sorted(c["name"] for c in identity["candidates"]) == ["Lars Berg", "Sofia Ek"]


async def test_a_console_connecting_later_gets_a_snapshot_newest_first(connect, agent_cookie):
    _, first = await _start(connect, email="first@example.com")
    _, second = await _start(connect, email="second@example.com")
    _, snapshot = await _console(connect, agent_cookie)
    assert [c["id"] for c in snapshot["conversations"]] == [
        second["conversation_id"],
        first["conversation_id"],
    ]


async def test_messages_flow_both_ways_with_acks_after_storage(connect, agent_cookie):
    console, _ = await _console(connect, agent_cookie)
    other_console, _ = await _console(connect, agent_cookie)
    visitor, started = await _start(connect)
    conversation_id = started["conversation_id"]
    for each in (console, other_console):
        await each.receive_until(_event("identified"))

    await visitor.send({"type": "message", "text": "Before anyone watches", "client_msg_id": "v1"})
    ack = await visitor.receive()
    assert ack["type"] == "ack" and ack["client_msg_id"] == "v1"
    assert await Message.objects.filter(pk=ack["message_id"]).aexists()

    await console.send({"type": "watch", "conversation_id": conversation_id})
    history = await console.receive()
    assert history["type"] == "message"
    assert history["conversation_id"] == conversation_id
    assert history["message"]["text"] == "Before anyone watches"
    assert history["message"]["sender"] == "visitor"

    await visitor.send({"type": "message", "text": "Hello?", "client_msg_id": "v2"})
    await visitor.receive()
    live = await console.receive()
    assert live["message"]["text"] == "Hello?"
    assert await other_console.nothing()  # not watching: no message events

    await console.send({"type": "reply", "conversation_id": conversation_id, "text": "Hi Anna!",
                        "client_msg_id": "a1"})  # fmt: skip
    frames = [await console.receive(), await console.receive()]
    assert sorted(f["type"] for f in frames) == ["ack", "message"]  # own reply, as a watcher
    reply_ack = next(f for f in frames if f["type"] == "ack")
    assert reply_ack["client_msg_id"] == "a1"
    to_visitor = await visitor.receive()
    assert to_visitor["type"] == "message"
    assert to_visitor["sender"] == "agent"
    assert to_visitor["text"] == "Hi Anna!"
    assert to_visitor["message_id"] == reply_ack["message_id"]
    assert to_visitor["sent_at"].endswith("Z")

    await console.send({"type": "unwatch", "conversation_id": conversation_id})
    await visitor.send({"type": "message", "text": "Still there?", "client_msg_id": "v3"})
    await visitor.receive()
    assert await console.nothing()


async def test_a_resent_message_is_stored_once(connect):
    visitor, _ = await _start(connect)
    for _ in range(2):
        await visitor.send({"type": "message", "text": "Once", "client_msg_id": "same"})
    first, second = await visitor.receive(), await visitor.receive()
    assert first["message_id"] == second["message_id"]
    assert await Message.objects.acount() == 1


async def test_end_tells_the_visitor_and_every_console(connect, agent_cookie):
    visitor, _ = await _start(connect)
    console, _ = await _console(connect, agent_cookie)
    await visitor.send({"type": "end"})
    assert await visitor.receive() == {"type": "ended"}
    ended = await console.receive_until(_event("ended"))
    assert ended["conversation"]["state"] == "ended"
    assert await visitor.nothing()  # answered once, though the hub pushes it too
    await visitor.send({"type": "message", "text": "after the end", "client_msg_id": "late-1"})
    error = await visitor.receive()
    assert (error["code"], error["client_msg_id"]) == ("conversation_ended", "late-1")
    _, snapshot = await _console(connect, agent_cookie)
    assert snapshot["conversations"] == []


async def test_a_socket_that_ended_one_chat_and_resumed_another_is_told_when_that_one_ends(
    connect,
):
    first, _ = await _start(connect)
    await first.send({"type": "end"})
    assert await first.receive() == {"type": "ended"}
    other, started = await _start(connect, email="other.visitor@example.com")
    await first.send({"type": "resume", "token": started["token"]})
    assert (await first.receive())["type"] == "started"
    await other.send({"type": "end"})
    assert await other.receive() == {"type": "ended"}
    assert await first.receive() == {"type": "ended"}
    await first.send({"type": "message", "text": "still there?"})
    assert (await first.receive())["code"] == "conversation_ended"


# --- Resume -------------------------------------------------------------------


async def test_resume_after_a_dropped_connection_replays_what_was_missed(connect, agent_cookie):
    visitor, started = await _start(connect)
    await visitor.send({"type": "message", "text": "one", "client_msg_id": "1"})
    seen = (await visitor.receive())["message_id"]
    await visitor.communicator.disconnect()

    console, _ = await _console(connect, agent_cookie)
    for text in ("are you there?", "we can help"):
        await console.send({"type": "reply", "conversation_id": started["conversation_id"],
                            "text": text})  # fmt: skip
        await console.receive_until(lambda f: f["type"] == "ack")

    again = await connect("/ws/chat/")
    await again.send({"type": "resume", "token": started["token"], "after": seen})
    resumed = await again.receive()
    assert resumed == {"type": "started", "conversation_id": started["conversation_id"],
                       "token": started["token"]}  # fmt: skip
    replayed = [await again.receive(), await again.receive()]
    assert [m["text"] for m in replayed] == ["are you there?", "we can help"]
    assert all(m["sender"] == "agent" for m in replayed)
    assert await again.nothing()

    await again.send({"type": "message", "text": "yes!", "client_msg_id": "2"})
    assert (await again.receive())["type"] == "ack"


async def test_a_token_opens_only_its_own_conversation(connect):
    _, mine = await _start(connect, email="me@example.com")
    other, _ = await _start(connect, email="other@example.com")
    altered = mine["token"][:-1] + ("B" if mine["token"].endswith("A") else "A")
    for token in ("", "x" * 43, altered, 12):
        await other.send({"type": "resume", "token": token})
        assert (await other.receive())["code"] == "invalid_token"


# --- Bad frames ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"text": "no type"}', "unknown_type"),
        ('{"type": []}', "unknown_type"),  # found by tests/chat/test_frame_fuzz.py
        ('{"type": {"start": 1}}', "unknown_type"),
        ('{"type": "message", "text": "hi"}', "not_started"),
        ('{"type": "end"}', "not_started"),
        ('{"type": "start", "email": "not-an-email"}', "invalid_email"),
        ('{"type": "start", "email": 42}', "invalid_email"),
        ('{"type": "start"}', "invalid_email"),
        ('{"type": "start", "email": "a@example.com", "identity_hash": "00"}',
         "invalid_identity_hash"),
        ('{"type": "resume", "token": "nope"}', "invalid_token"),
        ('{"type": "resume", "token": "nope", "after": -1}', "invalid_frame"),
        ("x" * 20_000, "too_large"),
    ],
)  # fmt: skip
async def test_every_bad_frame_gets_an_error_and_the_socket_lives_on(connect, frame, code):
    visitor = await connect("/ws/chat/")
    await visitor.send_text(frame)
    error = await visitor.receive()
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["message"]
    await visitor.send({"type": "start", "email": "still@example.com"})
    assert (await visitor.receive())["type"] == "started"


async def test_message_errors_name_the_message(connect):
    visitor, _ = await _start(connect)
    await visitor.send({"type": "message", "text": "x" * 5000, "client_msg_id": "big"})
    assert await visitor.receive() == {
        "type": "error",
        "code": "too_large",
        "message": "Messages are limited to 4000 characters.",
        "client_msg_id": "big",
    }
    await visitor.send({"type": "message", "text": "   ", "client_msg_id": "blank"})
    assert (await visitor.receive())["code"] == "invalid_frame"
    assert not await Message.objects.aexists()


@override_settings(CP_WS_FRAMES_PER_SECOND=1, CP_WS_FRAME_BURST=3)
async def test_a_flood_is_rate_limited_and_the_socket_lives_on(connect):
    visitor, _ = await _start(connect)
    for n in range(6):
        await visitor.send({"type": "message", "text": f"flood {n}", "client_msg_id": str(n)})
    frames = [await visitor.receive() for _ in range(6)]
    assert [f["type"] for f in frames].count("ack") == 2  # the burst of 3 included the start
    assert {f.get("code") for f in frames if f["type"] == "error"} == {"rate_limited"}
    await asyncio.sleep(1.1)
    await visitor.send({"type": "message", "text": "calm", "client_msg_id": "calm"})
    assert (await visitor.receive())["type"] == "ack"


async def test_a_second_start_on_one_socket_is_refused(connect):
    visitor, _ = await _start(connect)
    await visitor.send({"type": "start", "email": "again@example.com"})
    assert (await visitor.receive())["code"] == "already_started"


# --- Verified identities --------------------------------------------------------


@override_settings(WEBCHAT_IDENTITY_SECRET="host-secret")
async def test_a_signed_start_is_verified_and_a_forged_one_refused(connect, agent_cookie):
    console, _ = await _console(connect, agent_cookie)
    proof = webchat_identity_hash("anna@example.com")
    await _start(connect, email="Anna@example.com", identity_hash=proof)
    identified = await console.receive_until(_event("identified"))
    assert identified["conversation"]["identity"]["verified"] is True

    forger = await connect("/ws/chat/")
    await forger.send({"type": "start", "email": "ceo@example.com", "identity_hash": proof})
    assert (await forger.receive())["code"] == "invalid_identity_hash"
    assert await Conversation.objects.acount() == 1


@override_settings(WEBCHAT_IDENTITY_SECRET="host-secret", WEBCHAT_REQUIRE_VERIFIED=True)
async def test_unsigned_starts_are_refused_when_verification_is_required(connect):
    visitor = await connect("/ws/chat/")
    await visitor.send({"type": "start", "email": "anna@example.com"})
    assert (await visitor.receive())["code"] == "identity_required"


# --- Who may connect ------------------------------------------------------------


async def test_an_anonymous_console_is_closed_with_4401(connect):
    console = await connect("/ws/console/")
    assert await console.communicator.receive_output(timeout=3) == {
        "type": "websocket.close",
        "code": 4401,
    }


async def test_a_console_without_the_permission_is_closed_with_4403(connect, staff_cookie):
    console = await connect("/ws/console/", cookie=staff_cookie)
    assert (await console.communicator.receive_output(timeout=3))["code"] == 4403


async def test_the_console_socket_refuses_other_sites(agent_cookie):
    from channels.testing import WebsocketCommunicator

    from cpweb.asgi import application

    communicator = WebsocketCommunicator(
        application,
        "/ws/console/",
        headers=[(b"origin", b"https://evil.example"), (b"cookie", agent_cookie)],
    )
    connected, _ = await communicator.connect()
    assert not connected


@override_settings(WEBCHAT_ALLOWED_ORIGINS=["https://shop.example"])
async def test_the_widget_socket_opens_from_allowed_sites_only(connect):
    assert await connect("/ws/chat/", origin=(b"origin", b"https://shop.example"))
    from channels.testing import WebsocketCommunicator

    from cpweb.asgi import application

    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"origin", b"https://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected


async def test_console_frames_are_checked_too(connect, agent_cookie):
    console, _ = await _console(connect, agent_cookie)
    await console.send({"type": "watch", "conversation_id": "not-a-uuid"})
    assert (await console.receive())["code"] == "unknown_conversation"
    await console.send({"type": "reply", "conversation_id": "00000000-0000-0000-0000-000000000000",
                        "text": "hi"})  # fmt: skip
    assert (await console.receive())["code"] == "unknown_conversation"
    await console.send({"type": "start", "email": "a@example.com"})
    assert (await console.receive())["code"] == "unknown_type"


# --- Live re-identification -------------------------------------------------------


async def test_adding_the_visitor_to_the_directory_names_them_on_the_console(
    connect, agent_cookie, sync
):
    console, _ = await _console(connect, agent_cookie)
    await _start(connect, email="newcomer@example.com")
    identified = await console.receive_until(_event("identified"))
    assert identified["conversation"]["identity"]["status"] == "unmatched"

    await sync(contact_create, name="New Comer", emails=["NEWCOMER@example.com"])
    updated = await console.receive_until(_event("updated"))
    assert updated["conversation"]["identity"]["display_name"] == "New Comer"

    def rename():
        contact = Contact.objects.get(name="New Comer")
        contact.name = "Newton Comer"
        contact.save()

    await sync(rename)
    renamed = await console.receive_until(_event("updated"))
    assert renamed["conversation"]["identity"]["display_name"] == "Newton Comer"

    await sync(lambda: Contact.objects.get(name="Newton Comer").delete())
    removed = await console.receive_until(_event("updated"))
    assert removed["conversation"]["identity"]["status"] == "unmatched"


async def test_nul_characters_are_dropped_from_what_is_stored(connect):
    # PostgreSQL text cannot hold NUL: a NUL in a message crashed the socket there.
    visitor, _ = await _start(connect, name="An\x00na")
    await visitor.send({"type": "message", "text": "hi\x00 there", "client_msg_id": "a\x00"})
    ack = await visitor.receive()
    assert ack["type"] == "ack"
    message = await Message.objects.select_related("conversation").aget()
    assert (message.text, message.client_msg_id) == ("hi there", "a")
    assert message.conversation.name == "Anna"
    await visitor.send({"type": "message", "text": "\x00"})
    assert (await visitor.receive())["code"] == "invalid_frame"


# --- Failures inside the server -------------------------------------------------


async def test_a_database_outage_costs_the_frame_not_the_socket(connect, monkeypatch):
    from django.db import OperationalError

    from chat import services

    visitor, _ = await _start(connect)
    real = services.message_post

    def down(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "message_post", down)
    await visitor.send({"type": "message", "text": "hello?", "client_msg_id": "c1"})
    error = await visitor.receive()
    assert (error["type"], error["code"]) == ("error", "unavailable")
    monkeypatch.setattr(services, "message_post", real)
    await visitor.send({"type": "message", "text": "hello?", "client_msg_id": "c1"})
    ack = await visitor.receive()
    assert ack["type"] == "ack" and ack["client_msg_id"] == "c1"
    assert await Message.objects.filter(text="hello?").acount() == 1


async def test_a_bug_in_a_handler_costs_the_frame_not_the_socket(connect, monkeypatch):
    from chat import services

    visitor, _ = await _start(connect)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(services, "message_post", broken)
    await visitor.send({"type": "message", "text": "hello?", "client_msg_id": "c1"})
    error = await visitor.receive()
    assert (error["type"], error["code"]) == ("error", "server_error")
    await visitor.send({"type": "end"})
    assert (await visitor.receive())["type"] == "ended"


async def test_a_message_pushed_late_still_reaches_a_console_that_has_newer_ones(
    connect, agent_cookie, sync
):
    """Messages commit out of id order (two writers; a push lost with a killed
    worker and sent again when the visitor resends): a lower id arriving after
    a higher one is still shown, and a repeat of either is not."""
    from django.db import transaction

    from chat import events

    console, _ = await _console(connect, agent_cookie)
    visitor, started = await _start(connect)
    conversation_id = started["conversation_id"]
    await console.receive_until(_event("identified"))
    await console.send({"type": "watch", "conversation_id": conversation_id})
    assert await console.nothing()  # no history yet

    # Stored, but its push never left (the worker died in between).
    late = await Message.objects.acreate(
        conversation_id=conversation_id, sender=Message.Sender.VISITOR, text="First, lost"
    )
    await visitor.send({"type": "message", "text": "Second", "client_msg_id": "v2"})
    second = await console.receive()
    assert second["message"]["text"] == "Second" and second["message"]["message_id"] > late.pk

    def push_again(message):
        with transaction.atomic():
            events.message_posted(message)

    await sync(push_again, late)
    pushed = await console.receive()
    assert pushed["message"]["message_id"] == late.pk
    await sync(push_again, late)
    assert await console.nothing()  # already shown once


async def test_an_answer_to_a_client_that_has_just_closed_is_dropped_without_a_traceback():
    """The soak's visitors close as their chat ends: daphne refuses the answer
    to a frame sent just before (``Disconnected``), which used to escape the
    consumer and fill the log with "Exception inside application"."""
    from autobahn.exception import Disconnected

    from chat.consumers import VisitorConsumer

    consumer = VisitorConsumer()
    sent = []

    async def closed(message: dict) -> None:
        sent.append(message)
        raise Disconnected("Attempt to send on a closed protocol")

    consumer.base_send = closed
    await consumer.send_frame({"type": "error", "code": "conversation_ended", "message": "Ended."})
    # Pushes that waited behind a replay, sent as the replay ends, and the
    # visitor's own "ended": every send to the closed client, not just answers.
    consumer.pending = ['{"type": "message", "sender": "agent"}']
    await consumer.flush()
    await consumer.send(text_data='{"type": "ended"}')
    assert [m["type"] for m in sent] == ["websocket.send"] * 3
