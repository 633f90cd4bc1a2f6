"""Websocket consumers: the visitor's web chat (SPEC §3) and the agent console (SPEC §4).

They parse frames, check who may do what, and call ``chat.services``; pushes
reach them through the process hub (``chat.hub``), never through a channel
of their own.
"""

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError

from chat import limits, services
from chat.events import encode, message_payload
from chat.hub import Hub, get_hub
from chat.models import Conversation, Message, storable_text
from chat.selectors import (
    conversation_for_token,
    conversation_get,
    messages_after,
)
from chat.wire import CLOSED, Writer, scope_writer
from cpweb.db import db
from cpweb.metrics import OPEN_SOCKETS
from cpweb.middleware import CLOSE_TRY_AGAIN
from directory.identify import webchat_identity_hash_valid
from directory.normalize import IdentifierError, normalize_email

log = logging.getLogger(__name__)

ENDED_FRAME = encode({"type": "ended"})
MESSAGE_FRAME = '{"type":"message"'  # how a message push begins (chat.events.encode)
MAX_CLIENT_MSG_ID = 100
MAX_NAME = 200
# Like 4401/4403 for 401/403: a websocket close code that reads as HTTP 429.
CLOSE_TOO_MANY = 4429


class Delivered:
    """The message ids of one conversation a socket has been sent.

    Everything up to ``floor`` (what a resuming visitor says it has) plus each
    id sent since. A set, not a high-water mark: messages commit out of id
    order (two writers, or a message pushed again after its first push was
    lost with a killed worker), and a lower id arriving late is still new.
    """

    def __init__(self, floor: int = 0, ids: Iterable[int] = ()) -> None:
        self.floor = floor
        self.ids = set(ids)

    def __contains__(self, message_id: int) -> bool:
        return message_id <= self.floor or message_id in self.ids

    def add(self, message_id: int) -> None:
        self.ids.add(message_id)


class TokenBucket:
    """At most ``rate`` frames a second on average, in bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class FrameError(Exception):
    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra


class JsonFrameConsumer(AsyncWebsocketConsumer):
    """JSON text frames dispatched on ``type``; every bad frame gets an error frame."""

    # No channel of our own: the process hub delivers pushes (chat.hub).
    channel_layer_alias = "cpweb.hub-delivers"
    frame_types: frozenset[str] = frozenset()
    hub: Hub
    write_frame: Writer | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels runs close_old_connections in the database thread before
        # every handler: a thread hop per frame, queued behind real database
        # work. Every database call here goes through cpweb.db (Channels' DatabaseSyncToAsync),
        # which closes stale connections itself, so the hop is skipped.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        self.bucket = TokenBucket(settings.CP_WS_FRAMES_PER_SECOND, settings.CP_WS_FRAME_BURST)
        self.delivered: dict[str, Delivered] = {}  # conversation id -> message ids sent
        self.hub = await get_hub()
        self.write_frame = scope_writer(self.scope)  # chat.wire: pushes skip the ASGI path
        await super().websocket_connect(message)

    # Set once connect() has let the socket in: frames that raced a refusal
    # (4401, 4403, 4429) are dropped, never handled.
    admitted = False
    socket_kind = ""  # cpweb_open_sockets{kind}
    counted_open = False

    def admit(self) -> None:
        self.admitted = True
        if not self.counted_open:
            self.counted_open = True
            OPEN_SOCKETS.labels(self.socket_kind).inc()

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        if self.counted_open:
            self.counted_open = False
            OPEN_SOCKETS.labels(self.socket_kind).dec()
        await super().websocket_disconnect(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.admitted:
            return
        try:
            await self._handle(text_data if text_data is not None else bytes_data or b"")
        except FrameError as error:
            await self.send_frame({"type": "error", "code": error.code, "message": error.message,
                                   **error.extra})  # fmt: skip
        except DatabaseError as exc:
            # The database is restarting or unreachable: nothing was stored, so
            # nothing was acked; the client may send the same frame again.
            log.warning("%s frame failed on the database (%s)", self.socket_kind,
                        type(exc).__name__)  # fmt: skip
            await self.send_frame({"type": "error", "code": "unavailable",
                                   "message": "The server cannot store this right now; "
                                              "try again in a moment."})  # fmt: skip
        except Exception:
            # A bug must cost one frame, not the socket (and with it the
            # per-address socket count, released only by disconnect()).
            log.exception("%s frame handler failed", self.socket_kind)
            await self.send_frame(
                {"type": "error", "code": "server_error", "message": "This frame failed; sorry."}
            )

    async def _handle(self, data: str | bytes) -> None:
        size = len(data.encode() if isinstance(data, str) else data)
        if size > settings.CP_WS_MAX_FRAME_BYTES:
            raise FrameError(
                "too_large", f"Frames are limited to {settings.CP_WS_MAX_FRAME_BYTES} bytes."
            )
        if not self.bucket.take():
            raise FrameError("rate_limited", "Too many frames; slow down.")
        try:
            frame = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FrameError("invalid_json", f"The frame is not valid JSON: {exc}") from exc
        if not isinstance(frame, dict):
            raise FrameError("invalid_json", "A frame is a JSON object with a 'type'.")
        kind = frame.get("type")
        if not isinstance(kind, str) or kind not in self.frame_types:
            expected = ", ".join(sorted(self.frame_types))
            raise FrameError(
                "unknown_type", f"Unknown frame type {kind!r}; expected one of {expected}."
            )
        try:
            await getattr(self, f"on_{kind}")(frame)
        except (OperationalError, InterfaceError) as exc:
            # The database is down or restarting: nothing was stored (no ack
            # was sent), the socket stays open, and the client may retry.
            extra = {}
            if isinstance(frame.get("client_msg_id"), str):
                extra["client_msg_id"] = frame["client_msg_id"]
            raise FrameError(
                "unavailable", "The service is briefly unavailable; try again.", **extra
            ) from exc

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except CLOSED:
            # The client closed while this frame was on the way: nobody to
            # tell, and nothing lost (what it sent unacked, it sends again;
            # a console resyncs from its snapshot).
            log.debug("%s socket closed before a frame reached it", self.socket_kind)

    async def send_frame(self, frame: object) -> None:
        await self.send(text_data=encode(frame))

    # Pushes that arrive while a snapshot, a history or a replay is being
    # sent wait here, so the client sees the state first and changes after.
    pending: list[str] | None = None

    async def deliver(self, frame: str, wire: bytes | None = None) -> bool | None:
        """A push from the hub, already encoded (``wire``: as a websocket frame).

        How it went out: True straight to the connection (chat.wire), False
        through the server's send path, None not now (held behind a snapshot,
        or already sent).
        """
        if self.pending is not None:
            self.pending.append(frame)
            return None
        return await self._send_new(frame, wire)

    def push(self, frame: str, wire: bytes) -> bool:
        """The hub's fast path: write a push at once when nothing has to wait or
        be checked first; False leaves it to ``deliver``."""
        if self.pending is not None or self.write_frame is None or frame.startswith(MESSAGE_FRAME):
            return False
        return self.write_frame(wire)

    async def flush(self) -> None:
        """Send what waited while a snapshot, history or replay went out."""
        frames, self.pending = self.pending or [], None
        for frame in frames:
            await self._send_new(frame)

    async def _send_new(self, frame: str, wire: bytes | None = None) -> bool | None:
        # A message event can arrive after the history that already held it
        # (published before the watch, delivered after it): send each message once.
        if frame.startswith(MESSAGE_FRAME):
            conversation_id, message_id = self._message_key(json.loads(frame))
            delivered = self.delivered.setdefault(conversation_id, Delivered())
            if message_id in delivered:
                return None
            delivered.add(message_id)
        if wire is not None and self.write_frame is not None and self.write_frame(wire):
            return True
        await self.send(text_data=frame)
        return False

    def _message_key(self, data: dict[str, Any]) -> tuple[str, int]:
        """(conversation id, message id) of a console or a visitor message frame."""
        if "message" in data:  # console form
            return data["conversation_id"], int(data["message"]["message_id"])
        conversation = getattr(self, "conversation", None)
        return str(conversation.pk if conversation else ""), int(data["message_id"])


def _text(frame: dict[str, Any], client_msg_id: str) -> str:
    text = frame.get("text")
    text = storable_text(text) if isinstance(text, str) else None
    if not text or not text.strip():
        raise FrameError("invalid_frame", "'text' must be a non-empty string.",
                         client_msg_id=client_msg_id)  # fmt: skip
    if len(text) > settings.CP_MAX_MESSAGE_CHARS:
        raise FrameError("too_large",
                         f"Messages are limited to {settings.CP_MAX_MESSAGE_CHARS} characters.",
                         client_msg_id=client_msg_id)  # fmt: skip
    return text


def _client_msg_id(frame: dict[str, Any]) -> str:
    value = frame.get("client_msg_id", "")
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_CLIENT_MSG_ID:
        raise FrameError("invalid_frame", f"'client_msg_id' must be a string of at most "
                         f"{MAX_CLIENT_MSG_ID} characters.")  # fmt: skip
    return storable_text(value)


def _optional_string(frame: dict[str, Any], key: str, limit: int) -> str | None:
    value = frame.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise FrameError(
            "invalid_frame", f"{key!r} must be a string of at most {limit} characters."
        )
    return storable_text(value)


class VisitorConsumer(JsonFrameConsumer):
    """``/ws/chat/``: a website visitor's web chat. The visitor never learns the identity."""

    frame_types = frozenset({"start", "resume", "message", "end"})
    socket_kind = "visitor"
    conversation: Conversation | None = None
    counted_socket = False

    async def connect(self) -> None:
        self.address = limits.client_address(self.scope)
        await self.accept()
        if not limits.socket_open(self.address):
            # Accepted first so the reason and the close code reach the browser.
            await self.send_frame(
                {"type": "error", "code": "too_many_connections",
                 "message": "Too many open chats from your address."}
            )  # fmt: skip
            await self.close(code=CLOSE_TOO_MANY)
            return
        self.counted_socket = True
        self.admit()

    async def disconnect(self, code: int) -> None:
        if self.counted_socket:
            limits.socket_closed(self.address)
            self.counted_socket = False
        self._detach()

    # The conversation this socket's own "end" ended (on_end): its "ended" was
    # answered directly. An id, not a flag: a socket may resume another chat.
    ended_here: str | None = None

    def _detach(self) -> None:
        if self.conversation is not None:
            self.hub.remove_visitor(self, str(self.conversation.pk))
            self.conversation = None

    def push(self, frame: str, wire: bytes) -> bool:
        return frame != ENDED_FRAME and super().push(frame, wire)

    async def deliver(self, frame: str, wire: bytes | None = None) -> bool | None:
        if frame == ENDED_FRAME and self.conversation is not None:
            self.conversation.state = Conversation.State.ENDED
            if self.ended_here == str(self.conversation.pk):
                return None  # on_end answered it
            if self.pending is not None:
                return None  # the replay ends with the conversation's state
        return await super().deliver(frame, wire)

    async def resync(self) -> None:
        """After a gap in pushes (chat.hub): the agent messages missed, and "ended"."""
        conversation = self.conversation
        if conversation is None:
            return
        conversation_id = str(conversation.pk)
        self.pending = []
        try:
            missed = await db(messages_after)(conversation, self.delivered.get(conversation_id, 0))
            current = await db(conversation_get)(conversation_id)
            for message in missed:
                if message.sender == Message.Sender.AGENT:
                    await self._send_new(encode({"type": "message", **message_payload(message)}))
            # The socket's own "end" is answered by on_end, even if this read
            # came before its commit.
            if (
                current is not None
                and current.state != conversation.state
                and self.ended_here != conversation_id
            ):
                conversation.state = current.state
                if current.state == Conversation.State.ENDED:
                    await self.send(text_data=ENDED_FRAME)
        finally:
            await self.flush()

    async def on_start(self, frame: dict[str, Any]) -> None:
        if self.conversation is not None:
            raise FrameError("already_started", "This socket already has a conversation.")
        email = frame.get("email")
        name = _optional_string(frame, "name", MAX_NAME)
        identity_hash = _optional_string(frame, "identity_hash", 200)
        try:
            if not isinstance(email, str):
                raise IdentifierError("invalid_email", "'email' must be a string.")
            normalised = normalize_email(email)
        except IdentifierError as exc:
            raise FrameError("invalid_email", exc.message) from exc
        verified = False
        if identity_hash:
            if not webchat_identity_hash_valid(normalised, identity_hash):
                raise FrameError(
                    "invalid_identity_hash", "identity_hash does not match this email."
                )
            verified = True
        elif settings.WEBCHAT_REQUIRE_VERIFIED:
            raise FrameError("identity_required", "This site requires a signed identity_hash.")
        if not await limits.webchat_start_allowed(self.address):
            raise FrameError("rate_limited", "Too many new chats from your address; "
                             "try again in a minute.")  # fmt: skip
        conversation, token = await db(services.conversation_start)(
            channel="webchat", identifier=email, name=name, verified=verified
        )
        self._attach(conversation)
        # As for acks: "started" only once the consoles' push has left this
        # process, so a worker killed now cannot leave consoles unaware of it.
        await self.hub.published()
        await self.send_frame(
            {"type": "started", "conversation_id": str(conversation.pk), "token": token}
        )

    def _attach(self, conversation: Conversation) -> None:
        self._detach()
        self.conversation = conversation
        self.hub.add_visitor(self, str(conversation.pk))

    async def on_resume(self, frame: dict[str, Any]) -> None:
        token = frame.get("token")
        after = frame.get("after", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise FrameError("invalid_frame", "'after' must be a message id (an integer >= 0).")
        conversation = await db(conversation_for_token)(token) if isinstance(token, str) else None
        if conversation is None:
            raise FrameError("invalid_token", "This token does not belong to a conversation.")
        self.pending = []
        self._attach(conversation)
        missed = await db(messages_after)(conversation, after)
        await self.send_frame(
            {"type": "started", "conversation_id": str(conversation.pk), "token": token}
        )
        for message in missed:
            await self.send_frame({"type": "message", **message_payload(message)})
        if conversation.state == Conversation.State.ENDED:
            await self.send(text_data=ENDED_FRAME)
        self.delivered[str(conversation.pk)] = Delivered(after, (m.pk for m in missed))
        await self.flush()

    def _open_conversation(self, client_msg_id: str) -> Conversation:
        # The error names the message it refuses, as an ack would.
        if self.conversation is None:
            raise FrameError("not_started", "Send 'start' (or 'resume') first.",
                             client_msg_id=client_msg_id)  # fmt: skip
        if self.conversation.state != Conversation.State.OPEN:
            raise FrameError("conversation_ended", "This conversation has ended.",
                             client_msg_id=client_msg_id)  # fmt: skip
        return self.conversation

    async def on_message(self, frame: dict[str, Any]) -> None:
        client_msg_id = _client_msg_id(frame)
        conversation = self._open_conversation(client_msg_id)
        text = _text(frame, client_msg_id)
        message = await db(services.message_post)(
            conversation=conversation,
            sender=Message.Sender.VISITOR,
            text=text,
            client_msg_id=client_msg_id,
        )
        await self.hub.published()
        await self.send_frame(
            {"type": "ack", "client_msg_id": client_msg_id, "message_id": message.pk}
        )

    async def on_end(self, frame: dict[str, Any]) -> None:
        if self.conversation is None:
            raise FrameError("not_started", "Send 'start' (or 'resume') first.")
        if self.conversation.state == Conversation.State.ENDED:
            await self.send(text_data=ENDED_FRAME)
            return
        # The visitor's own "end" is answered here, not through the hub: with
        # the channel layer down (Redis restarting) the push would never come.
        # The hub's copy for this socket is dropped (``deliver``); the
        # conversation's other sockets get theirs through the hub, or from a
        # resync after the gap. Set first: the hub's copy may come before the
        # call returns.
        self.ended_here = str(self.conversation.pk)
        try:
            await db(services.conversation_end)(conversation=self.conversation)
        except BaseException:
            self.ended_here = None
            raise
        # As for an ack: once the consoles' push has left this process (at most
        # 2 s with the layer down), so a worker killed now leaves none unaware.
        await self.hub.published()
        await self.send(text_data=ENDED_FRAME)


class ConsoleConsumer(JsonFrameConsumer):
    """``/ws/console/``: an agent's live view of every open conversation."""

    frame_types = frozenset({"watch", "unwatch", "reply"})
    socket_kind = "console"

    async def connect(self) -> None:
        # Accept first so the close code reaches the browser (a refused
        # handshake would only show as a failed connection).
        await self.accept()
        try:
            await self._admit()
        except (OperationalError, InterfaceError):
            # The database is down: 4503, try again later; the console page reconnects.
            self.hub.remove_console(self)
            await self.close(code=CLOSE_TRY_AGAIN)

    async def _admit(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await db(user.has_perm)("chat.view_conversation"):
            await self.close(code=4403)
            return
        self.user_id = user.pk
        self.admit()
        self.watching: set[str] = set()
        self.pending = []
        self.hub.add_console(self)
        await self._send_snapshot()
        await self.flush()

    async def disconnect(self, code: int) -> None:
        self.hub.remove_console(self)

    def forget(self, conversation_id: str) -> None:
        """The conversation ended a while ago (chat.hub): stop tracking it."""
        self.watching.discard(conversation_id)
        self.delivered.pop(conversation_id, None)

    async def resync(self) -> None:
        """After a gap in pushes (chat.hub): a fresh snapshot, as on connect.

        Like a reconnect, it leaves the console watching nothing; the console
        page watches its open conversation again and gets the history afresh.
        """
        for conversation_id in list(self.watching):
            self.hub.unwatch(self, conversation_id)
        self.watching.clear()
        self.delivered.clear()
        self.pending = []
        try:
            await self._send_snapshot()
        finally:
            await self.flush()

    async def _send_snapshot(self) -> None:
        # The consoles sharing a snapshot share its frame's bytes, too (chat.wire).
        frame, wire = await self.hub.snapshot()
        if self.write_frame is None or not self.write_frame(wire):
            await self.send(text_data=frame)

    async def _conversation(self, frame: dict[str, Any]) -> Conversation:
        conversation_id = frame.get("conversation_id")
        conversation = (
            await db(conversation_get)(conversation_id)
            if isinstance(conversation_id, str)
            else None
        )
        if conversation is None:
            raise FrameError("unknown_conversation", f"No conversation {conversation_id!r}.")
        return conversation

    async def on_watch(self, frame: dict[str, Any]) -> None:
        conversation = await self._conversation(frame)
        conversation_id = str(conversation.pk)
        if conversation_id in self.watching:
            return
        self.pending = []
        self.watching.add(conversation_id)
        self.hub.watch(self, conversation_id)
        history = await db(messages_after)(conversation, 0)
        for message in history:
            await self.send_frame(
                {"type": "message", "conversation_id": conversation_id,
                 "message": message_payload(message)}
            )  # fmt: skip
        self.delivered[conversation_id] = Delivered(0, (m.pk for m in history))
        await self.flush()

    async def on_unwatch(self, frame: dict[str, Any]) -> None:
        conversation_id = frame.get("conversation_id")
        if isinstance(conversation_id, str) and conversation_id in self.watching:
            self.watching.discard(conversation_id)
            self.hub.unwatch(self, conversation_id)
            self.delivered.pop(conversation_id, None)

    async def on_reply(self, frame: dict[str, Any]) -> None:
        client_msg_id = _client_msg_id(frame)
        text = _text(frame, client_msg_id)
        conversation = await self._conversation(frame)
        if conversation.state != Conversation.State.OPEN:
            raise FrameError("conversation_ended", "This conversation has ended.",
                             client_msg_id=client_msg_id)  # fmt: skip
        message = await db(services.message_post)(
            conversation=conversation,
            sender=Message.Sender.AGENT,
            text=text,
            client_msg_id=client_msg_id,
            author_id=self.user_id,
        )
        await self.hub.published()
        await self.send_frame(
            {"type": "ack", "client_msg_id": client_msg_id, "message_id": message.pk}
        )
