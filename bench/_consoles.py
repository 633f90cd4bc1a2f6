"""Many receiving websocket clients in a few processes, cheap enough not to be the bottleneck.

The fan-out and contact-center benchmarks need hundreds of consoles receiving up to
hundreds of thousands of frames a second on a 2-core machine that also runs the servers.
A `websockets` client spends tens of µs per frame; this one is a bare asyncio Protocol
that parses the server's (unmasked, unfragmented) frames straight out of the read buffer
and stamps a whole read with one clock reading. It answers pings, and sends `watch`
frames for the conversations assigned to it (cpweb consoles).

    pool = ConsolePool(processes=2)
    pool.connect(urls, headers={"Cookie": ..., "Origin": ...}, mode="cpweb", watch=True)
    pool.begin()                 # start recording
    ...                          # produce events; remember each key's send time
    pool.wait(expected, timeout) # until that many frames arrived (or the timeout)
    result = pool.end(sent)      # latencies of the frames whose key is in ``sent``

Keys identify what a frame carries, for matching against the producer's send times:
``cpweb`` conversation frames: ``<conversation id>:<event>``; cpweb message frames: the
message text; ``room`` frames (the tutorial room and the bare websockets floor,
``{"message": "KEY|padding"}``): KEY.
``time.perf_counter`` is CLOCK_MONOTONIC on Linux, the same clock in every process.
"""

import asyncio
import base64
import contextlib
import multiprocessing
import os
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from urllib.parse import urlsplit

CONVERSATION = b'{"type":"conversation","event":"'
MESSAGE = b'{"type":"message","conversation_id":"'
ROOM = b'{"message": "'


@dataclass
class Result:
    latencies: list[float]  # seconds, of the frames whose key was sent
    matched: int
    received: int  # every frame recorded since begin(), matched or not
    matched_bytes: int
    cpu: float  # seconds of CPU the client processes used since begin()
    by_kind: dict[str, list[float]]  # latencies by event (started, identified, ended, message)


class _Recorder:
    def __init__(self, mode: str, watch: bool) -> None:
        self.mode, self.watch = mode, watch
        self.reset()

    def reset(self) -> None:
        self.keys: list[bytes] = []
        self.times: list[float] = []
        self.sizes: list[int] = []


class _Client(asyncio.Protocol):
    def __init__(self, recorder: _Recorder, index: int, consoles: int) -> None:
        self.recorder, self.index, self.consoles = recorder, index, consoles
        self.buffer = bytearray()
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.handshaken = False

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(exc or ConnectionError("closed during the handshake"))

    def send_text(self, text: bytes) -> None:
        # Client frames must be masked; a zero mask is valid and leaves the payload as is.
        n = len(text)
        head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
        assert self.transport is not None
        self.transport.write(head + b"\0\0\0\0" + text)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buffer = self.buffer
        buffer += data
        if not self.handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            del buffer[: end + 4]
            if b" 101 " not in status:
                self.open.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self.handshaken = True
            if self.recorder.mode == "room":  # no snapshot: open once upgraded
                self.open.set_result(None)
        pos, size = 0, len(buffer)
        recorder = self.recorder
        while size - pos >= 2:
            opcode, length = buffer[pos] & 0x0F, buffer[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            end = pos + head + length
            if end > size:
                break
            payload = bytes(buffer[pos + head : end])
            pos = end
            if opcode == 1:
                if not self.open.done():
                    self.open.set_result(None)  # a console's first frame: its snapshot
                key = self.key(payload)
                if key is not None:
                    recorder.keys.append(key)
                    recorder.times.append(now)
                    recorder.sizes.append(length)
            elif opcode == 9:  # ping: pong with the same payload
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 8 and self.transport is not None:
                self.transport.close()
        del buffer[:pos]

    def key(self, payload: bytes) -> bytes | None:
        if self.recorder.mode == "room":
            if payload.startswith(ROOM):
                return payload[13 : payload.index(b"|", 13)]
            return None
        if payload.startswith(CONVERSATION):
            event = payload[32 : payload.index(b'"', 32)]
            at = payload.find(b'"id":"', 40) + 6
            conversation_id = payload[at : at + 36]
            if (
                self.recorder.watch
                and event == b"started"
                and int(conversation_id[:8], 16) % self.consoles == self.index
            ):
                self.send_text(b'{"type":"watch","conversation_id":"' + conversation_id + b'"}')
            return conversation_id + b":" + event
        if payload.startswith(MESSAGE):
            at = payload.find(b'"text":"') + 8
            return payload[at : payload.index(b'"', at)]
        return None


async def _open(url: str, headers: dict[str, str], client: _Client) -> None:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    await loop.create_connection(lambda: client, parts.hostname, parts.port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             *(f"{name}: {value}" for name, value in headers.items())]  # fmt: skip
    assert client.transport is not None
    client.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await asyncio.wait_for(client.open, 30)


async def _serve(conn: Connection, mode: str, watch: bool) -> None:
    loop = asyncio.get_running_loop()
    recorder = _Recorder(mode, watch)
    clients: list[_Client] = []
    inbox: asyncio.Queue[tuple] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))
    cpu0 = time.process_time()
    while True:
        command, *args = await inbox.get()
        if command == "connect":
            urls, headers, first_index, consoles = args
            for i, url in enumerate(urls):
                client = _Client(recorder, first_index + i, consoles)
                await _open(url, headers, client)
                clients.append(client)
            conn.send(len(clients))
        elif command == "begin":
            recorder.reset()
            cpu0 = time.process_time()
            conn.send(True)
        elif command == "count":
            conn.send(len(recorder.keys))
        elif command == "end":
            (sent,) = args
            latencies, matched_bytes = array("d"), 0
            kinds: dict[str, array] = {}
            for key, at, size in zip(recorder.keys, recorder.times, recorder.sizes, strict=True):
                if (sent_at := sent.get(key)) is not None:
                    latencies.append(at - sent_at)
                    matched_bytes += size
                    kind = kind_of(key)
                    kinds.setdefault(kind, array("d")).append(at - sent_at)
            conn.send((latencies.tobytes(), len(recorder.keys), matched_bytes,
                       time.process_time() - cpu0,
                       {kind: values.tobytes() for kind, values in kinds.items()}))  # fmt: skip
        elif command == "stop":
            for client in clients:
                if client.transport is not None:
                    client.transport.close()
            conn.send(True)
            return


def kind_of(key: bytes) -> str:
    """The event a sent key stands for: ``b"<id>:started"`` -> "started"; a message's key
    has no colon."""
    return key.rpartition(b":")[2].decode() if b":" in key else "message"


def _floats(raw: bytes) -> array:
    values = array("d")
    values.frombytes(raw)
    return values


def _process_main(conn: Connection, mode: str, watch: bool) -> None:
    asyncio.run(_serve(conn, mode, watch))


class ConsolePool:
    """``processes`` client processes sharing the consoles out evenly."""

    def __init__(self, processes: int, mode: str, watch: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs = []
        for _ in range(processes):
            mine, theirs = context.Pipe()
            proc = context.Process(target=_process_main, args=(theirs, mode, watch), daemon=True)
            proc.start()
            self.conns.append(mine)
            self.procs.append(proc)
        self.consoles = 0

    def _all(self, *command: object) -> list:
        for conn in self.conns:
            conn.send(command)
        return [conn.recv() for conn in self.conns]

    def connect(self, urls: list[str], headers: dict[str, str]) -> None:
        """Open one console per URL (repeat a URL for several), waiting for each first frame."""
        share = -(-len(urls) // len(self.conns))
        for n, conn in enumerate(self.conns):
            conn.send(("connect", urls[n * share : (n + 1) * share], headers, n * share, len(urls)))
        for conn in self.conns:
            if not conn.poll(120):
                raise RuntimeError("consoles did not connect within 120 s")
            conn.recv()
        self.consoles = len(urls)

    def begin(self) -> None:
        self._all("begin")

    def received(self) -> int:
        return sum(self._all("count"))

    def end(self, sent: dict[bytes, float]) -> Result:
        latencies: list[float] = []
        matched = received = matched_bytes = 0
        cpu = 0.0
        by_kind: dict[str, list[float]] = {}
        for raw, got, size, used, kinds in self._all("end", sent):
            latencies.extend(_floats(raw))
            received, matched_bytes, cpu = received + got, matched_bytes + size, cpu + used
            for kind, values in kinds.items():
                by_kind.setdefault(kind, []).extend(_floats(values))
        matched = len(latencies)
        return Result(latencies, matched, received, matched_bytes, cpu, by_kind)

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs if proc.pid is not None]

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._all("stop")
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
