"""Pushes written to a socket as ready-made websocket frames.

A lifecycle event reaches every console. Through the ASGI send path each of
those frames costs Channels' and the session middleware's send wrappers,
daphne's reply handling and autobahn's framing, per console: about 70 % of the
server's CPU under fan-out (bench/fanout.py). Yet a server-to-client text frame
is the same bytes for every socket (it is not masked), so the hub encodes it
once per event (``text_frame``) and each socket writes those bytes straight to
its connection when the server allows it (``frame_writer``).

Only daphne (the default server) is handled. The writer is used only while
the socket is open and no compression was negotiated (daphne negotiates none);
otherwise, and under any other server, frames take the ASGI path. Both paths
end in the same connection, written in call order, so the frames a consumer
sends itself (acks, snapshots) and the hub's pushes stay in order. On a plain
TCP connection the frame goes to the socket at once (``_send_now``).

How the connection is reached: ``RawFrames`` is the outermost websocket
middleware (cpweb/asgi.py). It sees the server's own ``send`` and puts a
writer for it in the scope, where a consumer finds it (``scope_writer``).
"""

import functools
import struct
from collections.abc import Callable
from typing import Any

# Writes a frame and says whether it did (False: the socket is closing, or
# the writer stopped applying; send through ASGI instead, which knows).
Writer = Callable[[bytes], bool]

SCOPE_KEY = "cpweb.frame_writer"

try:  # What daphne's send raises once the client has closed the connection.
    from autobahn.exception import Disconnected

    CLOSED: tuple[type[Exception], ...] = (Disconnected,)
except ImportError:  # pragma: no cover - daphne (and autobahn) is a dependency
    CLOSED = ()


def text_frame(text: str) -> bytes:
    """One final, unmasked text frame (RFC 6455 §5.2) carrying ``text``."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", 0x81, size) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def frame_writer(send: Any) -> Writer | None:
    """A writer for the connection behind a server's ASGI ``send``, if it is daphne's."""
    protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # pragma: no cover - daphne is a dependency
        return None
    if not isinstance(protocol, WebSocketProtocol):
        return None
    plain: bool | None = None  # a plain TCP connection? Known once connected.

    def write(frame: bytes) -> bool:
        nonlocal plain
        # Checked on every write: the state changes when a close handshake
        # starts, and compression, if it were negotiated, is known once open.
        transport = protocol.transport
        if (
            protocol.state != protocol.STATE_OPEN
            or protocol._perMessageCompress is not None
            or transport is None
            or transport.disconnecting
        ):
            return False
        if plain is None:
            plain = _plain_tcp(transport)
        if plain:
            _send_now(transport, frame)
        else:
            transport.write(frame)
        return True

    return write


def _plain_tcp(transport: Any) -> bool:
    from twisted.internet.tcp import Connection

    return isinstance(transport, Connection) and not transport.TLS


def _send_now(transport: Any, frame: bytes) -> None:
    """Write to the socket at once when nothing is queued before the frame.

    Twisted's ``write`` always queues, then registers the socket with the
    event loop for one writable callback and unregisters it after: three
    trips through the reactor per frame, more than half the cost of a push
    to one console. Sending straight away is what asyncio's own transports
    do. Whatever the socket does not take (a slow client) goes to Twisted's
    queue, which then keeps the order and the flow as before.
    """
    if transport.dataBuffer or transport._tempDataBuffer:
        transport.write(frame)  # behind what is queued
        return
    try:
        sent = transport.socket.send(frame)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        # Reset or broken: Twisted's own write finds out and closes the connection.
        sent = 0
    if sent < len(frame):
        transport.write(frame[sent:])


def scope_writer(scope: dict[str, Any]) -> Writer | None:
    writer = scope.get(SCOPE_KEY)
    return writer if callable(writer) else None


class RawFrames:
    """ASGI middleware: offer consumers a writer for the server's connection."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, SCOPE_KEY: frame_writer(send)}
        await self.application(scope, receive, send)
