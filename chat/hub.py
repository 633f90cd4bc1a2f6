"""One hub per process fans pushes out to the sockets of that process.

``chat.events`` publishes each change once to the channel layer group
``cpweb.hub``; every process's hub is the one member of that group it has, so
an event costs one delivery per process, not one per console. The hub writes
the pre-encoded frames straight to its local sockets:

- lifecycle events to every console (all of them hold ``chat.view_conversation``);
- message events to the consoles watching the conversation;
- agent messages and "ended" to the conversation's visitor sockets.

Frames are delivered in the order the hub receives them, so each console sees
one process's events in commit order.

Across processes the layer is Redis pub/sub (channels-redis'
``RedisPubSubChannelLayer``): a push is one PUBLISH, and each hub's
subscription streams pushes in without a round trip per event (the list-based
``RedisChannelLayer`` needs four sequential round trips per received message,
about 1,000 a second at best here, and drops what exceeds a channel's capacity).
Each hub publishes what was queued meanwhile as one batch, so a busy
loop's slow round trips do not cap a process's events a second either.
Pub/sub forgets what it could not deliver, so every event carries its
publisher's ``origin`` and a ``seq`` that grows by one, and each heartbeat (a
message to the group every 2 s that must come back to this hub) the last
``seq`` its publisher sent: a hub that sees a number skipped, or no heartbeat
of its own, has missed pushes (Redis restarted, a subscription dropped). When
pushes flow again after such a gap, every local socket is resynced from the
database (``Recipient.resync``): consoles get a fresh snapshot, visitors the
agent messages they missed.

With the in-memory channel layer there is one process by definition, but a
management command (``import_directory``) runs in another and cannot reach it
through the layer. There the hub also polls for conversations whose identity
changed in the last few seconds and pushes those it has not pushed itself.
"""

import asyncio
import contextvars
import logging
import math
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Coroutine, Mapping
from datetime import timedelta
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.utils import timezone

from chat.events import (
    HUB_GROUP,
    HubEvent,
    conversation_payload,
    encode,
    snapshot_frame,
    timestamp,
)
from chat.wire import text_frame
from cpweb.db import db
from cpweb.memory import release_free_memory
from cpweb.metrics import PUSH_FRAMES, PUSH_SECONDS

log = logging.getLogger(__name__)

CATCH_UP_INTERVAL = 1.0
CATCH_UP_WINDOW = timedelta(seconds=10)
# A change younger than this may not have reached this hub's queue yet (made
# by another process, or committed a moment ago): the poll leaves it to its
# own push (else a console, and a CRM framing it, could see a poll's
# "updated" before the "identified" it repeats).
CATCH_UP_GRACE = timedelta(seconds=2)
PUBLISH_WAIT_SECONDS = 2.0
SLOW_LOG_SECONDS = 60.0  # answers sent before their push left: logged this often at most
PUBLISH_BATCH = 200  # events in one channel-layer message, at most
HEARTBEAT_SECONDS = 2.0
HEARTBEAT_TIMEOUT = 3.0
ENDED_LINGER_SECONDS = 10.0  # watchers of an ended conversation are kept this long
ORIGIN_FORGOTTEN_SECONDS = 600  # a publisher not heard from for this long has gone


class Recipient(Protocol):
    def push(self, frame: str, wire: bytes) -> bool: ...

    async def deliver(self, frame: str, wire: bytes | None = None) -> bool | None: ...

    async def resync(self) -> None: ...

    def forget(self, conversation_id: str) -> None: ...


class Hub:
    def __init__(self) -> None:
        self.consoles: set[Recipient] = set()
        self.watchers: defaultdict[str, set[Recipient]] = defaultdict(set)
        self.visitors: defaultdict[str, set[Recipient]] = defaultdict(set)
        # conversation id -> identity_updated_at last pushed, for the catch-up poll
        self.pushed_identity: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._starting = asyncio.Lock()
        # Events to publish, and markers that ``published()`` waits on.
        self._outbox: asyncio.Queue[Mapping[str, Any] | asyncio.Future[None]] = asyncio.Queue()
        # This hub's events are numbered (see the module docstring): the last
        # number given out, and per publisher the last one received and when.
        self.origin = secrets.token_hex(8)
        self._seq = 0
        self._received: dict[str, tuple[int, float]] = {}
        # (when, conversation id) of conversations ended, oldest first
        self._ended: deque[tuple[float, str]] = deque()
        # Only the in-memory layer's catch-up poll needs what identity was pushed.
        self._catching_up = False
        # The consoles' shared snapshot read (``snapshot``), and when it began.
        self._snapshot: asyncio.Future[tuple[str, bytes]] | None = None
        self._snapshot_started = 0.0
        self.started_at = time.monotonic()  # get_hub starts a hub as it makes it
        self.loop = asyncio.get_running_loop()
        self._layer = None
        self._channel = ""
        # health probes and heartbeats in flight: token -> the future the listener resolves
        self._pings: dict[str, asyncio.Future[None]] = {}
        # Set when pushes may have been missed (the layer failed); cleared by a resync.
        self.gap = False
        # Answers sent before their push left (``published``), not logged yet, and
        # when that was last logged: one line a minute at most, not one an ack.
        self._slow_answers = 0
        self._slow_logged = -math.inf

    async def start(self) -> None:
        async with self._starting:
            if self._tasks:
                return
            layer = get_channel_layer()
            if layer is None:
                return
            channel = await layer.new_channel("hub.")
            try:
                # Join before anything is published, or the first events are lost.
                await layer.group_add(HUB_GROUP, channel)
            except BaseException:
                # Given up (a /healthz timeout cancels a start that hangs): the
                # layer may hold the channel in the group already, and would
                # queue every push for it with nobody reading.
                discard = asyncio.ensure_future(layer.group_discard(HUB_GROUP, channel))
                discard.add_done_callback(lambda task: task.cancelled() or task.exception())
                raise
            self._layer, self._channel = layer, channel
            self._spawn(self._listen(layer, channel))
            self._spawn(self._publish(layer))
            if isinstance(layer, InMemoryChannelLayer):
                self._catching_up = True
                self._spawn(self._catch_up(layer, channel))
            else:
                self._spawn(self._watch_layer(layer, channel))
            if settings.CP_MEMORY_TRIM_SECONDS:
                self._spawn(self._trim_memory(settings.CP_MEMORY_TRIM_SECONDS))

    async def _trim_memory(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(release_free_memory)
            except Exception:  # one failure must not end trimming for the process's life
                log.exception("hub: handing freed memory back failed")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # A fresh context: the hub outlives the request or socket that started
        # it, whose asgiref executor (inherited through contextvars) is gone by
        # the time the hub calls the database ("CurrentThreadExecutor already
        # quit"); in a fresh context database_sync_to_async uses the process's
        # own database thread.
        self._tasks.append(asyncio.create_task(work, context=contextvars.Context()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # channels-redis may linger in a cancelled receive; don't wait forever.
            await asyncio.wait(self._tasks, timeout=2)
        self._tasks.clear()

    # --- Publishing -----------------------------------------------------------

    def publish_threadsafe(self, event: HubEvent) -> None:
        """Queue an event for the channel layer from any thread, without waiting.

        Services run in the database thread; making that thread wait for the
        event loop on every push would serialise all writes behind the
        fan-out. One queue and one task keep the events in commit order.
        """
        self.loop.call_soon_threadsafe(self._queue, event)

    def _queue(self, event: HubEvent) -> None:
        # Pushed as far as the catch-up poll is concerned once it is queued:
        # however long its delivery takes, the poll must not repeat it first.
        self._mark_pushed(event)
        self._outbox.put_nowait(event)

    def _mark_pushed(self, event: HubEvent) -> None:
        """Note the identity an event pushes, for the in-memory catch-up poll."""
        if self._catching_up and "identity_updated_at" in event:
            conversation_id, stamp = event["conversation_id"], event["identity_updated_at"]
            self.pushed_identity[conversation_id] = max(
                stamp, self.pushed_identity.get(conversation_id, "")
            )

    async def published(self, timeout: float = PUBLISH_WAIT_SECONDS) -> None:
        """Return once every event queued so far is handed to the channel layer.

        An ack waits for this, so that a message acked by a process that is
        killed a moment later has already left it: consoles on the other
        processes still get it. A layer that is down does not hold the ack
        (the message is stored) beyond ``timeout``.
        """
        if not self._tasks:
            return
        marker = self.loop.create_future()
        self._outbox.put_nowait(marker)
        try:
            await asyncio.wait_for(asyncio.shield(marker), timeout)
        except TimeoutError:
            self._slow_answers += 1
            if time.monotonic() - self._slow_logged >= SLOW_LOG_SECONDS:
                log.warning("hub: the channel layer is slow; answers go out before their push "
                            "has left this process (%d since this was last logged)",
                            self._slow_answers)  # fmt: skip
                self._slow_answers, self._slow_logged = 0, time.monotonic()

    async def _publish(self, layer) -> None:
        """Hand queued events to the layer in batches: everything queued while
        the last batch was on its way goes out as one message. Under load a
        busy event loop takes milliseconds to come round to a reply, and one
        message per event would cap a process at a few hundred events a second."""
        unpublished = 0  # events not published since the layer last took one
        while True:
            events: list[dict[str, Any]] = []
            markers: list[asyncio.Future[None]] = []
            item = await self._outbox.get()
            while True:
                if isinstance(item, asyncio.Future):
                    markers.append(item)
                else:
                    self._seq += 1
                    events.append({**item, "origin": self.origin, "seq": self._seq})
                if self._outbox.empty() or len(events) >= PUBLISH_BATCH:
                    break
                item = self._outbox.get_nowait()
            if events:
                try:
                    await layer.group_send(HUB_GROUP, {"type": "hub.batch", "events": events})
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Committed but not pushed: sockets resync once the layer is
                    # back (and every other hub sees these numbers skipped).
                    self.gap = True
                    if not unpublished:  # the first of an outage, with its cause
                        log.exception("hub: publishing %d events failed", len(events))
                    unpublished += len(events)
                else:
                    if unpublished:
                        log.warning(
                            "hub: publishing again; %d events were not published", unpublished
                        )
                    unpublished = 0
            for marker in markers:
                if not marker.done():
                    marker.set_result(None)

    async def ping(self) -> None:
        """A message through the channel layer to this hub's own listener and back.

        Readiness (``/healthz``): proves the layer carries messages *and* this
        process's hub is receiving them, which is what pushes need. The probe
        never calls ``receive()`` itself, so it needs no channel (nor a
        subscription) of its own and competes with no reader. A reply that
        comes after the caller gave up finds no waiter and is dropped, so
        nothing is left behind.
        """
        if self._layer is None:
            raise RuntimeError("the hub is not listening (no channel layer)")
        token = secrets.token_hex(8)
        waiter = self.loop.create_future()
        self._pings[token] = waiter
        try:
            await self._layer.send(self._channel, {"type": "hub.ping", "token": token})
            await waiter
        finally:
            self._pings.pop(token, None)

    # --- Registration ---------------------------------------------------------

    def add_console(self, console: Recipient) -> None:
        self.consoles.add(console)

    def remove_console(self, console: Recipient) -> None:
        self.consoles.discard(console)
        for conversation_id in [c for c, watchers in self.watchers.items() if console in watchers]:
            self.unwatch(console, conversation_id)

    def watch(self, console: Recipient, conversation_id: str) -> None:
        self.watchers[conversation_id].add(console)

    def unwatch(self, console: Recipient, conversation_id: str) -> None:
        watchers = self.watchers.get(conversation_id)
        if watchers is not None:
            watchers.discard(console)
            if not watchers:
                del self.watchers[conversation_id]

    def add_visitor(self, visitor: Recipient, conversation_id: str) -> None:
        self.visitors[conversation_id].add(visitor)

    def remove_visitor(self, visitor: Recipient, conversation_id: str) -> None:
        visitors = self.visitors.get(conversation_id)
        if visitors is not None:
            visitors.discard(visitor)
            if not visitors:
                del self.visitors[conversation_id]

    # --- Delivery -------------------------------------------------------------

    async def deliver(self, event: HubEvent) -> None:
        conversation_id = event["conversation_id"]
        if event["type"] == "hub.conversation":
            consoles = list(self.consoles)
            self._mark_pushed(event)
            if event["visitor"] is not None:  # "ended": nothing more will be posted
                self._ended.append((time.monotonic(), conversation_id))
            self._forget_ended()
        else:
            consoles = list(self.watchers.get(conversation_id, ()))
        await _send_all(consoles, event["console"])
        visitor_frame = event["visitor"]
        visitors = list(self.visitors.get(conversation_id, ())) if visitor_frame else []
        if visitor_frame is not None:
            await _send_all(visitors, visitor_frame)
        if (consoles or visitors) and "committed_at" in event:
            # Commit to the last of this process's frames written.
            PUSH_SECONDS.labels(event["type"].removeprefix("hub.")).observe(
                max(0.0, time.time() - event["committed_at"])
            )

    def _forget_ended(self) -> None:
        """Stop tracking who watches conversations that ended a while ago.

        A console that never unwatches would otherwise hold every conversation
        it ever watched, here and in the socket. Not at once: a message
        committed just before the end may be pushed just after it.
        """
        horizon = time.monotonic() - ENDED_LINGER_SECONDS
        while self._ended and self._ended[0][0] < horizon:
            _, conversation_id = self._ended.popleft()
            for console in self.watchers.pop(conversation_id, ()):
                console.forget(conversation_id)

    async def _listen(self, layer, channel: str) -> None:
        backoff = 0.1
        while True:
            try:
                event = await layer.receive(channel)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # channels-redis' pub/sub reader reconnects by itself; a layer
                # that fails a read instead may have lost what was on the way.
                self.gap = True
                log.warning(
                    "hub: channel layer receive failed (%r); retrying in %.1fs", error, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if event.get("type") in ("hub.ping", "hub.heartbeat"):
                if "origin" in event:
                    self._count(event)
                waiter = self._pings.get(event.get("token", ""))
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                continue
            # A hub's batch, or one event from a process without a hub (chat.events).
            for one in event.get("events", ()) if event.get("type") == "hub.batch" else [event]:
                try:
                    if "origin" in one:
                        self._count(one)
                    await self.deliver(one)
                except Exception:
                    log.exception("hub: delivering %s failed", one.get("type"))

    def _count(self, event: dict[str, Any]) -> None:
        """Note a publisher's numbered event or heartbeat; a number skipped is a gap."""
        origin, now, seq = event["origin"], time.monotonic(), event["seq"]
        heartbeat = event["type"] == "hub.heartbeat"
        last = self._received.get(origin)
        if last is None:
            # A publisher not heard from yet. Every running one is heard (its
            # heartbeat) within our first seconds; after that an unknown one has
            # just started, and its numbers must start at the beginning.
            settled = now - self.started_at > 2 * HEARTBEAT_SECONDS + HEARTBEAT_TIMEOUT
            missed = settled and seq != (0 if heartbeat else 1)
        elif heartbeat:
            missed = last[0] < seq  # everything up to ``seq`` was published before it
        else:
            missed = seq != last[0] + 1
        if missed and not self.gap:
            log.warning(
                "hub: pushes from another process were lost (%s: %d after %d); resyncing",
                origin,
                seq,
                last[0] if last else 0,
            )
        self.gap = self.gap or missed
        self._received[origin] = (max(seq, last[0]) if last else seq, now)

    async def _watch_layer(self, layer, channel: str) -> None:
        """Every few seconds: a heartbeat to the group that must come back here.
        One that cannot be sent is a gap (Redis is down); the first that comes
        back after a gap resyncs every socket of this process. One that is
        merely late is not: a busy listener loses nothing, and resyncing every
        console then would only add load (a lost push shows as a skipped
        number, ``_count``)."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            token = secrets.token_hex(8)
            waiter = self.loop.create_future()
            self._pings[token] = waiter
            # Sent beside the outbox, not behind it. Its ``seq`` is the last
            # number given out: an event is numbered in the same step that
            # queues it on the layer's (FIFO) publish lock, so every event the
            # heartbeat counts is published, and delivered, before it.
            heartbeat = {
                "type": "hub.heartbeat",
                "token": token,
                "origin": self.origin,
                "seq": self._seq,
            }
            try:
                await layer.group_send(HUB_GROUP, heartbeat)
                await asyncio.wait_for(waiter, HEARTBEAT_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                log.warning("hub: a heartbeat took over %.0f s to come back", HEARTBEAT_TIMEOUT)
                continue
            except Exception as error:
                if not self.gap:
                    log.warning("hub: pushes are not coming through (%r)", error)
                self.gap = True
                continue
            finally:
                self._pings.pop(token, None)
            horizon = time.monotonic() - ORIGIN_FORGOTTEN_SECONDS
            self._received = {o: r for o, r in self._received.items() if r[1] > horizon}
            if self.gap:
                self.gap = False
                await self.resync()

    async def resync(self) -> None:
        """Tell every local socket to catch up from the database after a gap.

        All at once: the consoles then share one snapshot (``snapshot``), and
        the visitors' reads spread over the database threads."""
        recipients: list[Recipient] = list(self.consoles)
        for visitors in self.visitors.values():
            recipients.extend(visitors)
        log.warning("hub: pushes resumed after a gap; resyncing %d sockets", len(recipients))
        outcomes = await asyncio.gather(
            *(recipient.resync() for recipient in recipients), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                log.error("hub: resyncing a socket failed", exc_info=outcome)

    async def snapshot(self) -> tuple[str, bytes]:
        """The consoles' snapshot frame, read from the database after this call,
        and as a websocket frame (chat.wire), encoded once for all who share it.

        A console calls it right after it began holding its pushes. Consoles
        that connect or resync together share reads: a read begun after a
        console began holding shows it everything it was not sent;
        one in flight that began before waits, and the consoles that came
        meanwhile share the next. 200 consoles reconnecting at once (a worker
        killed, a resync after a gap) read the open conversations about
        twice, not 200 times, and hold one copy of it, not 200 (a snapshot of
        1,000 open conversations is about 1 MB).
        """
        since = time.monotonic()
        while True:
            read = self._snapshot
            if read is not None and self._snapshot_started >= since:
                # Shielded: one console going away must not cancel the others' read.
                return await asyncio.shield(read)
            if read is not None and not read.done():
                await asyncio.wait([read])
                continue
            self._snapshot_started = time.monotonic()
            self._snapshot = asyncio.ensure_future(db(_snapshot_frames)())

    async def _catch_up(self, layer, channel: str) -> None:
        from chat.selectors import conversations_with_last_message, identity_changes_since

        while True:
            await asyncio.sleep(CATCH_UP_INTERVAL)
            try:
                # The in-memory layer drops a group member after a day.
                await layer.group_add(HUB_GROUP, channel)
                now = timezone.now()
                since = now - CATCH_UP_WINDOW
                changes = await database_sync_to_async(identity_changes_since)(
                    since, until=now - CATCH_UP_GRACE
                )
                # Only those this hub has not pushed are read whole: under load
                # nearly every change was pushed, and payloads cost queries.
                missed = {
                    conversation_id: stamp
                    for conversation_id, changed_at in changes
                    if self.pushed_identity.get(conversation_id, "")
                    < (stamp := timestamp(changed_at))
                }
                if missed:
                    conversations = await database_sync_to_async(conversations_with_last_message)(
                        missed
                    )
                    for conversation in conversations:
                        conversation_id = str(conversation.pk)
                        self.pushed_identity[conversation_id] = timestamp(
                            conversation.identity_updated_at
                        )
                        frame = encode(
                            {
                                "type": "conversation",
                                "event": "updated",
                                "conversation": conversation_payload(conversation),
                            }
                        )
                        await _send_all(list(self.consoles), frame)
                horizon = timestamp(since)
                self.pushed_identity = {
                    c: s for c, s in self.pushed_identity.items() if s >= horizon
                }
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hub: catch-up poll failed")


def _snapshot_frames() -> tuple[str, bytes]:
    frame = snapshot_frame()
    return frame, text_frame(frame)


async def _send_all(recipients: list[Recipient], frame: str) -> None:
    if not recipients:
        return
    wire = text_frame(frame)  # one encoding for every socket (chat.wire)
    direct = through_asgi = 0
    for recipient in recipients:
        try:
            sent = recipient.push(frame, wire) or await recipient.deliver(frame, wire)
        except Exception:
            log.debug("hub: a socket went away mid-delivery", exc_info=True)
            continue
        if sent:
            direct += 1
        elif sent is not None:
            through_asgi += 1
    PUSH_FRAMES.labels("direct").inc(direct)
    PUSH_FRAMES.labels("asgi").inc(through_asgi)


_hubs: "WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = WeakKeyDictionary()


_serving: Hub | None = None


def serving_hub() -> Hub | None:
    """The hub of this process's running server loop, if there is one."""
    hub = _serving
    return hub if hub is not None and hub.loop.is_running() else None


async def stop_hub() -> None:
    """Stop this event loop's hub (tests; a server's loop ends with the process)."""
    global _serving
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        if _serving is hub:
            _serving = None
        await hub.stop()


async def get_hub() -> Hub:
    """This process's hub (one per event loop), started on first use."""
    global _serving
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    await hub.start()
    _serving = hub
    return hub
