"""Pushes lost between processes are noticed, and consoles resync.

Across processes pushes travel over Redis pub/sub, which forgets what it could
not deliver (a restart, a dropped subscription). Every hub numbers what it
publishes; a hub that sees a number skipped (in an event, or in a publisher's
heartbeat, which carries the last number it sent) resyncs its sockets. Here
another process is played by publishing to the hub group directly.
"""

import asyncio
import os
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.db import transaction
from django.utils import timezone

from chat.events import HUB_GROUP, encode
from chat.hub import (
    CATCH_UP_GRACE,
    CATCH_UP_INTERVAL,
    HEARTBEAT_SECONDS,
    HEARTBEAT_TIMEOUT,
    get_hub,
)

pytestmark = pytest.mark.django_db(transaction=True)

ON_REDIS = bool(os.environ.get("REDIS_URL"))
# A gap is acted on by the next heartbeat that comes back: within one interval
# and one round trip; the margin is for a loaded CI machine.
RESYNC_WITHIN = HEARTBEAT_SECONDS + HEARTBEAT_TIMEOUT + 5


def _event(seq: int, text: str) -> dict:
    """A batch of one event, as another process's hub publishes it."""
    frame = {"type": "conversation", "event": "updated", "conversation": {"id": text}}
    event = {
        "type": "hub.conversation",
        "conversation_id": text,
        "console": encode(frame),
        "visitor": None,
        "origin": "another-process",
        "seq": seq,
    }
    return {"type": "hub.batch", "events": [event]}


async def _console(connect, agent_cookie):
    console = await connect("/ws/console/", cookie=agent_cookie)
    assert (await console.receive())["type"] == "snapshot"
    return console


async def test_a_skipped_number_is_a_gap_and_the_push_after_it_still_arrives(connect, agent_cookie):
    console = await _console(connect, agent_cookie)
    layer, hub = get_channel_layer(), await get_hub()
    for seq in (1, 2):
        await layer.group_send(HUB_GROUP, _event(seq, f"c{seq}"))
        assert (await console.receive())["conversation"]["id"] == f"c{seq}"
    assert hub.gap is False
    await layer.group_send(HUB_GROUP, _event(4, "c4"))  # 3 never arrived
    assert (await console.receive())["conversation"]["id"] == "c4"
    assert hub.gap is True


@pytest.mark.skipif(not ON_REDIS, reason="heartbeats and resyncs run on the Redis layer")
async def test_a_console_gets_a_fresh_snapshot_after_a_lost_push(connect, agent_cookie):
    console = await _console(connect, agent_cookie)
    layer = get_channel_layer()
    await layer.group_send(HUB_GROUP, _event(1, "c1"))
    assert (await console.receive())["conversation"]["id"] == "c1"
    await layer.group_send(HUB_GROUP, _event(3, "c3"))
    assert (await console.receive())["conversation"]["id"] == "c3"
    snapshot = await console.receive(timeout=RESYNC_WITHIN)
    assert snapshot["type"] == "snapshot"


@pytest.mark.skipif(not ON_REDIS, reason="heartbeats and resyncs run on the Redis layer")
async def test_a_heartbeat_counting_more_than_arrived_is_a_gap(connect, agent_cookie):
    """The last push of a burst lost, with nothing after it: the publisher's
    next heartbeat says how many it sent."""
    console = await _console(connect, agent_cookie)
    layer = get_channel_layer()
    await layer.group_send(HUB_GROUP, _event(1, "c1"))
    assert (await console.receive())["conversation"]["id"] == "c1"
    heartbeat = {"type": "hub.heartbeat", "token": "x", "origin": "another-process", "seq": 1}
    await layer.group_send(HUB_GROUP, heartbeat)
    assert await console.nothing(timeout=HEARTBEAT_SECONDS + 1)  # all there: no resync
    await layer.group_send(HUB_GROUP, {**heartbeat, "seq": 2})  # 2 was sent, never arrived
    snapshot = await console.receive(timeout=RESYNC_WITHIN)
    assert snapshot["type"] == "snapshot"
    # The resync happens once, not at every heartbeat after it.
    await asyncio.sleep(0)
    assert await console.nothing(timeout=HEARTBEAT_SECONDS + 1)


async def test_events_queued_together_leave_in_one_message_in_order(
    connect, agent_cookie, monkeypatch
):
    """A hub publishes what was queued meanwhile as one batch: under load a busy
    loop is slow to come round to each reply, and one message per event capped
    a worker at a few hundred events a second (bench/contact_center.py)."""
    console = await _console(connect, agent_cookie)
    layer, hub = get_channel_layer(), await get_hub()
    messages = []
    group_send = layer.group_send

    async def recording_group_send(group, message):
        messages.append(message)
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", recording_group_send)
    for n in range(3):
        event = _event(0, f"q{n}")["events"][0]
        del event["origin"], event["seq"]
        hub.publish_threadsafe(event)
    await hub.published()
    batches = [m for m in messages if m["type"] == "hub.batch"]
    assert [[e["conversation_id"] for e in b["events"]] for b in batches] == [["q0", "q1", "q2"]]
    seqs = [e["seq"] for e in batches[0]["events"]]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    for n in range(3):
        assert (await console.receive())["conversation"]["id"] == f"q{n}"
    assert hub.gap is False


async def test_a_publisher_first_heard_mid_stream_is_a_gap_once_every_one_was_heard(
    connect, agent_cookie
):
    """Every running hub is heard (its heartbeat) within a hub's first seconds;
    after that a new publisher's numbers must start at 1, or its first pushes
    were lost."""
    console = await _console(connect, agent_cookie)
    layer, hub = get_channel_layer(), await get_hub()
    await layer.group_send(HUB_GROUP, _event(5, "early"))  # a publisher older than us
    assert (await console.receive())["conversation"]["id"] == "early"
    assert hub.gap is False
    hub.started_at -= 60  # this hub has been up a minute
    new = _event(1, "new")
    new["events"][0]["origin"] = "a-new-process"
    await layer.group_send(HUB_GROUP, new)
    assert (await console.receive())["conversation"]["id"] == "new"
    assert hub.gap is False
    late = _event(3, "late")
    late["events"][0]["origin"] = "another-new-process"  # its 1 and 2 never came
    await layer.group_send(HUB_GROUP, late)
    assert (await console.receive())["conversation"]["id"] == "late"
    assert hub.gap is True


async def test_the_in_memory_hub_joins_its_group_again(connect, agent_cookie, settings):
    """The in-memory layer (one process, the default) forgets a group member
    after a day; the hub joins again."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    console = await _console(connect, agent_cookie)
    layer, hub = get_channel_layer(), await get_hub()
    await layer.group_discard(HUB_GROUP, hub._channel)  # as the day's expiry does
    await asyncio.sleep(CATCH_UP_INTERVAL + 0.5)
    await layer.group_send(HUB_GROUP, _event(1, "back"))
    assert (await console.receive())["conversation"]["id"] == "back"


async def test_a_layer_outage_is_logged_once_with_its_cause_and_once_when_it_ends(
    connect, agent_cookie, caplog, monkeypatch
):
    """While the layer is down every batch fails; an operator wants the cause
    and how much went unpublished, not a traceback per batch (2,313 in one
    10-minute soak)."""
    console = await _console(connect, agent_cookie)
    layer, hub = get_channel_layer(), await get_hub()
    real_send = layer.group_send

    async def down(group: str, message: dict) -> None:
        if message["type"] == "hub.batch":
            raise ConnectionError("Connection refused (Redis is down)")
        await real_send(group, message)

    monkeypatch.setattr(layer, "group_send", down)
    for n in range(3):
        hub.publish_threadsafe(_event(1, f"lost{n}")["events"][0])
        await hub.published()
    monkeypatch.setattr(layer, "group_send", real_send)
    hub.publish_threadsafe(_event(1, "back")["events"][0])
    await hub.published()
    # On Redis the outage is also a gap: a resync's snapshot may come first.
    await console.receive_until(lambda f: f.get("conversation", {}).get("id") == "back")
    failures = [r for r in caplog.records if "publishing" in r.getMessage()]
    assert [(r.levelname, r.exc_info is not None) for r in failures] == [
        ("ERROR", True),
        ("WARNING", False),
    ]
    assert "Redis is down" in caplog.text
    assert failures[1].getMessage() == "hub: publishing again; 3 events were not published"


async def test_answers_sent_before_their_push_left_are_logged_once_a_minute_not_each(
    connect, agent_cookie, caplog, monkeypatch
):
    """While the layer is slow or down every ack waits its limit and goes out
    anyway; the full-load soak logged a line for each (821 in one run)."""
    await _console(connect, agent_cookie)
    layer, hub = get_channel_layer(), await get_hub()
    real_send, release = layer.group_send, asyncio.Event()

    async def stuck(group: str, message: dict) -> None:
        if message["type"] == "hub.batch":
            await release.wait()
        await real_send(group, message)

    monkeypatch.setattr(layer, "group_send", stuck)
    for n in range(4):
        hub.publish_threadsafe(_event(1, f"slow{n}")["events"][0])
        await hub.published(timeout=0.05)
    release.set()
    slow = [r.getMessage() for r in caplog.records if "is slow" in r.getMessage()]
    assert slow == [
        "hub: the channel layer is slow; answers go out before their push has left this "
        "process (1 since this was last logged)"
    ]


async def _identified_on_the_in_memory_layer(connect, agent_cookie, settings):
    """A console, and a chat started and identified on it, on the in-memory layer
    (the one with the catch-up poll)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    console = await _console(connect, agent_cookie)
    visitor = await connect("/ws/chat/")
    await visitor.send({"type": "start", "email": "walter.inn@example.com"})
    conversation_id = (await visitor.receive())["conversation_id"]
    await console.receive_until(
        lambda f: f.get("event") == "identified" and f["conversation"]["id"] == conversation_id
    )
    return console, conversation_id


def _rename(conversation_id: str, name: str, *, push: bool) -> None:
    """Change a conversation's identity, pushing ``updated`` after the commit or not."""
    from chat.events import conversation_changed
    from chat.models import Conversation

    with transaction.atomic():
        conversation = Conversation.objects.get(pk=conversation_id)
        conversation.identity = {**conversation.identity, "display_name": name}
        conversation.identity_updated_at = timezone.now()
        conversation.save(update_fields=["identity", "identity_updated_at"])
        if push:
            conversation_changed(conversation, "updated", crm_handoff=False)


async def test_the_in_memory_poll_leaves_a_fresh_change_to_its_push_then_catches_it(
    connect, agent_cookie, settings, monkeypatch
):
    """With the in-memory layer the hub polls for identity changes made by other
    processes. A change committed a moment ago is still on its way to the hub:
    pushing it from the poll too put an ``updated`` before the ``identified``
    it repeated (a CRM framing the console was handed both). A change whose
    push never comes is still pushed once the grace has passed."""
    console, conversation_id = await _identified_on_the_in_memory_layer(
        connect, agent_cookie, settings
    )
    grace = 4.0  # the wait for "nothing" below must end well inside it on a busy machine
    monkeypatch.setattr("chat.hub.CATCH_UP_GRACE", timedelta(seconds=grace))
    # As another process's commit, whose push comes late or never.
    await database_sync_to_async(_rename)(conversation_id, "Walter Inn", push=False)
    assert await console.nothing(timeout=2 * CATCH_UP_INTERVAL + 0.5)  # polls ran, and waited
    frame = await console.receive(timeout=grace + CATCH_UP_INTERVAL + 3)
    assert frame["event"] == "updated"
    assert frame["conversation"]["identity"]["display_name"] == "Walter Inn"
    assert await console.nothing(timeout=CATCH_UP_INTERVAL + 0.5)  # and only once


async def test_the_in_memory_poll_does_not_repeat_a_push_that_is_slow_to_arrive(
    connect, agent_cookie, settings, monkeypatch
):
    """A change this process pushed counts as pushed once it is queued: a push
    that takes longer than the poll's grace to arrive (a busy loop) still
    reaches the console once, with no poll's copy ahead of it."""
    console, conversation_id = await _identified_on_the_in_memory_layer(
        connect, agent_cookie, settings
    )
    layer = get_channel_layer()
    real_send, delay = layer.group_send, CATCH_UP_GRACE.total_seconds() + 2 * CATCH_UP_INTERVAL

    async def slow(group: str, message: dict) -> None:
        if message["type"] == "hub.batch":
            await asyncio.sleep(delay)
        await real_send(group, message)

    monkeypatch.setattr(layer, "group_send", slow)

    await database_sync_to_async(_rename)(conversation_id, "Walter Inn", push=True)
    frame = await console.receive(timeout=delay + 5)
    assert (frame["event"], frame["conversation"]["identity"]["display_name"]) == (
        "updated",
        "Walter Inn",
    )
    assert await console.nothing(timeout=CATCH_UP_INTERVAL + 0.5)  # that one, and only once


async def test_watchers_of_a_conversation_ended_a_while_ago_are_forgotten(
    connect, agent_cookie, monkeypatch
):
    """A console that watches every chat and never unwatches (a busy agent's
    page left open for a week) must not make the process hold every
    conversation it ever watched."""
    from chat import hub as hub_module

    console = await _console(connect, agent_cookie)
    hub = await get_hub()
    visitor = await connect("/ws/chat/")
    await visitor.send({"type": "start", "email": "anna@example.com"})
    conversation_id = (await visitor.receive())["conversation_id"]
    await console.send({"type": "watch", "conversation_id": conversation_id})
    await visitor.send({"type": "message", "text": "hello", "client_msg_id": "m1"})
    assert (await visitor.receive())["type"] == "ack"
    await console.receive_until(lambda f: f["type"] == "message")
    assert console_watching(hub, conversation_id)
    monkeypatch.setattr(hub_module, "ENDED_LINGER_SECONDS", 0.5)
    await visitor.send({"type": "end"})
    assert (await visitor.receive())["type"] == "ended"
    await console.receive_until(lambda f: f.get("event") == "ended")
    assert console_watching(hub, conversation_id)  # not at once: a late message may come
    await asyncio.sleep(0.6)
    other = await connect("/ws/chat/")
    await other.send({"type": "start", "email": "someone.else@example.com"})
    await console.receive_until(lambda f: f.get("event") == "started")
    assert not console_watching(hub, conversation_id)


def console_watching(hub, conversation_id: str) -> bool:
    consoles = list(hub.consoles)
    in_hub = conversation_id in hub.watchers
    in_socket = any(conversation_id in c.watching or conversation_id in c.delivered
                    for c in consoles)  # fmt: skip
    assert in_hub == in_socket
    return in_hub


async def test_consoles_connecting_together_share_snapshot_reads(
    connect, agent_cookie, monkeypatch
):
    """A worker killed, or a gap resynced: every console wants a snapshot at once.
    Each must show what it was not sent, and they share the database reads."""
    import time

    from chat import hub as hub_module

    reads = []
    real = hub_module.snapshot_frame

    def slow_read():
        reads.append(time.monotonic())
        time.sleep(0.2)  # a snapshot of many open conversations takes a while
        return real()

    monkeypatch.setattr(hub_module, "snapshot_frame", slow_read)
    visitor = await connect("/ws/chat/")
    await visitor.send({"type": "start", "email": "anna@example.com"})
    conversation_id = (await visitor.receive())["conversation_id"]
    consoles = await asyncio.gather(
        *(connect("/ws/console/", cookie=agent_cookie) for _ in range(12))
    )
    for console in consoles:
        snapshot = await console.receive()
        assert snapshot["type"] == "snapshot"
        assert [c["id"] for c in snapshot["conversations"]] == [conversation_id]
    # Not one each: consoles reach the hub in waves (each first signs in), and
    # a wave shares the read that begins after it.
    assert len(reads) <= len(consoles) / 3
