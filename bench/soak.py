"""A bounded soak: the contact-center load on 2 daphne workers, with faults on a schedule.

    .venv/bin/python bench/soak.py                  # 10 minutes of the contact-center load
    .venv/bin/python bench/soak.py --duration 70 --fault-every 20 --warm-up 5   # CI's version
    make soak SOAK_ARGS="--duration 120"

It needs no running services: it starts a private redis-server and a private PostgreSQL
(initdb; deploy/services.py) on free ports, so that it may restart them, and a cluster of
--workers daphne processes on them behind nginx (deploy.cluster, a fresh database). Then,
all through nginx, for --warm-up and then --duration seconds:

- C agent consoles (the demo agent, signed in through the login page); each conversation is
  watched by one of them. A console that drops reconnects (PostgreSQL down: closed 4503,
  tried again) and watches its conversations again from the snapshot it gets.
- V visitor sockets and the load of bench/contact_center.py, open loop: chats start from
  idle visitors, visitors in a chat send messages, a chat ends after V / (2 * start rate)
  seconds (once its messages are acked) and its visitor reconnects afresh. Each visitor
  behaves like the widget: when its socket drops it reconnects (nginx sends it to a worker
  that is up), sends `resume` with its token, and sends again every message not yet acked
  with the same client_msg_id (the server stores a message once per client_msg_id); an
  `unavailable` error frame is retried a second later, a message without any answer after
  10 s is sent again.
- An HTTP prober: GET /healthz and POST /api/identify (the demo API token) every --probe-every
  seconds (0.2).

Faults, in turn, every --fault-every seconds (90) from half that on, none starting in the last
--fault-seconds + 15 s: worker 1 killed with SIGKILL and started again --fault-seconds (5)
later; Redis stopped and started again (empty: it keeps nothing); PostgreSQL stopped
(pg_ctl -m fast) and started again. Worker 0 is never killed, so one process lives through
the whole run. A fault's window runs from its start until every worker's /healthz answers
200 again, plus --grace seconds (5). Each is printed with its times.

Checks (exit status 1 if one fails):
a. lost messages: every acked message_id is in the cluster's database afterwards, in its
   conversation, with its client_msg_id and text (acked, found, lost = acked - found: 0);
b. HTTP 5xx (prober answers and websocket handshakes): none outside the fault windows;
   prober requests that failed outside them (no answer) are failures too;
c. memory: VmRSS of each worker process after the warm-up (a restarted worker: --settle
   seconds (30) after its fault window, when it carries its share of the sockets again; it
   starts with none) and at its end (killed, or the end of the run), and the growth; above
   --max-rss-growth % (25) fails; every fault must have recovered (all workers ready). Each
   worker's RSS and open sockets over the run (about every 30 s) are printed too: a leak
   climbs, a burst's high-water mark is a step.
d. for information: p50/p99 start -> identified on the consoles and message -> ack at the
   visitor, counted outside the fault windows only.
--json PATH writes the report as JSON too (tests/deploy/test_soak.py reads it).

Default rate: the contact-center load of the scale issue (2,000 visitors, 200 consoles,
50 starts/s, 300 messages/s). On the 2-core development machine, which also runs this load
generator, that leaves no headroom: recovery after a fault overlaps minutes of full load and
the latencies (for information only) rise to seconds. An eighth of it (--visitors 250
--consoles 25 --starts-per-second 6.25 --messages-per-second 37.5) leaves a core free.
"""

import argparse
import asyncio
import contextlib
import json
import math
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from contact_center import ONE_ADDRESS, paced, raise_open_files, rss_mb
from webchat_load import KNOWN, login, pct

from deploy.cluster import Cluster
from deploy.services import PrivatePostgres, PrivateRedis

FAULTS = ("worker", "redis", "postgres")
KILLED_WORKER = 1  # worker 0 lives through the run: its memory says whether RSS stays flat
RETRY_SECONDS = 1.0  # after an `unavailable` (or `rate_limited`) error frame
RESEND_SECONDS = 10.0  # a message with no answer at all is sent again
STUCK_SECONDS = 15.0  # a start, resume or end without an answer: the socket is given up
TAIL_SECONDS = 15.0  # no fault starts later than this (plus its own length) before the end
READY_TIMEOUT = 60.0  # a fault not recovered by then fails the soak
# A logged traceback and the log line that introduced it ("hub: publishing … failed"); the
# chained ones of the same error follow a blank line and are not counted again.
TRACEBACK = re.compile(r"([^\n]+)\nTraceback \(most recent call last\)")
IDENTIFY = {"channel": "webchat", "identifier": "anna.svensson@nordicbikes.se"}

clock = time.perf_counter


@dataclass
class Window:
    """A fault, from its start until every worker answers /healthz again, plus the grace."""

    fault: str
    start: float
    recovered: float = math.inf
    end: float = math.inf
    note: str = ""

    def covers(self, start: float, end: float) -> bool:
        return start <= self.end and end >= self.start


@dataclass
class Process:
    """One daphne process of the run: RSS and open sockets when measuring starts
    (``since``; not before ``settles_at``) and at its end, and every 5 s between
    (``samples``: seconds, MB, sockets)."""

    worker: int
    pid: int
    settles_at: float
    since: float = math.nan
    start_mb: float = math.nan
    end_mb: float = math.nan
    start_sockets: int = 0
    end_sockets: int = 0
    until: float = math.nan
    killed: bool = False
    samples: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def growth(self) -> float:
        return 100 * (self.end_mb - self.start_mb) / self.start_mb


@dataclass
class Pending:
    text: str
    first_sent: float
    last_sent: float


@dataclass
class Acked:
    message_id: int
    conversation_id: str
    text: str


class Soak:
    """The clients, what they saw, the fault windows and the worker processes."""

    def __init__(
        self, cluster: Cluster, redis: PrivateRedis, postgres: PrivatePostgres,
        args: argparse.Namespace,
    ) -> None:  # fmt: skip
        self.cluster, self.redis, self.postgres, self.args = cluster, redis, postgres, args
        self.t0 = clock()  # reset when the measured run starts
        self.rng = random.Random(6)
        self.gate = asyncio.Semaphore(50)  # handshakes at once
        self.tasks: set[asyncio.Task[Any]] = set()
        self.visitors: list[Visitor] = []
        self.consoles: list[Console] = []
        self.idle: dict[Visitor, None] = {}
        self.chatting: dict[Visitor, None] = {}
        self.chat_seconds = args.visitors / (2 * args.starts_per_second)
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # error frames by code
        self.acked: dict[str, Acked] = {}  # client_msg_id -> what its first ack said
        self.start_sent: dict[str, float] = {}  # conversation id -> when its start was sent
        self.identified: list[tuple[str, float]] = []  # (conversation id, a console saw it)
        self.ack_times: list[tuple[float, float]] = []  # (first sent, acked)
        self.http: list[tuple[float, float, str, int | str]] = []  # (sent, answered, what, status)
        self.loop_lag: list[tuple[float, float]] = []  # (when due, seconds late)
        self.windows: list[Window] = []
        self.processes: list[Process] = []

    def at(self, moment: float) -> float:
        return moment - self.t0

    def say(self, text: str) -> None:
        print(f"[{self.at(clock()):7.1f} s] {text}", flush=True)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def open(self, who: str, path: str, cookie: str | None = None) -> ClientConnection:
        """A websocket through nginx, tried again until one opens.

        A handshake answered 5xx counts with the prober's 5xx."""
        headers = {"Cookie": cookie} if cookie else None
        while True:
            try:
                async with self.gate:
                    return await connect(
                        f"{self.cluster.ws_url}{path}", origin=self.cluster.url,
                        additional_headers=headers, compression=None, max_queue=None,
                        open_timeout=10,
                    )  # fmt: skip
            except (OSError, TimeoutError, WebSocketException) as error:
                self.counts[f"{who} connections refused"] += 1
                if isinstance(error, InvalidStatus) and error.response.status_code >= 500:
                    now = clock()
                    self.http.append((now, now, f"{who} handshake", error.response.status_code))
                await asyncio.sleep(0.5 + self.rng.random())

    # --- The load (ticks of bench/contact_center.paced) -------------------------------

    async def start(self, n: int) -> None:
        if not self.idle:
            self.counts["starts skipped (no idle visitor)"] += 1
            return
        visitor, _ = self.idle.popitem()
        email = self.rng.choice(KNOWN) if n % 2 else f"v-{uuid.uuid4().hex[:12]}@example.org"
        self.counts["starts"] += 1
        self.spawn(visitor.start(email))

    async def message(self, n: int) -> None:
        if not self.chatting:
            self.counts["messages skipped (no open chat)"] += 1
            return
        self.spawn(self.rng.choice(list(self.chatting)).post())

    async def load(self, seconds: float) -> None:
        await asyncio.gather(
            paced(self.args.starts_per_second, seconds, self.start),
            paced(self.args.messages_per_second, seconds, self.message),
        )

    def ack(self, visitor: "Visitor", client_msg_id: str, message_id: int) -> None:
        pending = visitor.pending.pop(client_msg_id, None)
        if (first := self.acked.get(client_msg_id)) is not None:
            # A resend's ack: the server must answer with the message it stored first.
            if first.message_id != message_id:
                self.counts["acked again under another message_id"] += 1
            return
        if pending is None:
            self.counts["acks for nothing sent"] += 1
            return
        self.acked[client_msg_id] = Acked(message_id, visitor.conversation_id, pending.text)
        self.ack_times.append((pending.first_sent, clock()))

    async def sweep(self) -> None:
        """Resend what got no answer at all; give up sockets that answer nothing."""
        while True:
            await asyncio.sleep(1)
            now = clock()
            for visitor in self.visitors:
                visitor.sweep(now)

    # --- Faults --------------------------------------------------------------------

    def schedule(self) -> list[tuple[float, str]]:
        kinds = [kind for kind in self.args.faults.split(",") if kind]
        plan: list[tuple[float, str]] = []
        at = self.args.fault_every / 2
        while kinds and at + self.args.fault_seconds + TAIL_SECONDS <= self.args.duration:
            plan.append((at, kinds[len(plan) % len(kinds)]))
            at += self.args.fault_every
        return plan

    async def faults(self, plan: list[tuple[float, str]]) -> None:
        for at, kind in plan:
            await asyncio.sleep(max(0.0, self.t0 + at - clock()))
            await self.inject(kind)

    async def inject(self, kind: str) -> None:
        window = Window(kind, clock())
        self.windows.append(window)
        try:
            await self.break_and_mend(kind, window)
        except Exception as error:  # say so in the report, and go on with the run
            window.note = f"failed: {type(error).__name__}: {error}"
        if await self.ready():
            window.recovered = clock()
            self.say(f"fault {kind}: {window.note}; every worker ready "
                     f"{window.recovered - window.start:.1f} s after the fault began")  # fmt: skip
        else:
            window.note += f"; NOT RECOVERED within {READY_TIMEOUT:g} s"
            self.say(f"fault {kind}: {window.note}")
        await asyncio.sleep(self.args.grace)
        window.end = clock()
        self.track_processes(settle=self.args.settle)

    async def break_and_mend(self, kind: str, window: Window) -> None:
        down = self.args.fault_seconds
        if kind == "worker":
            worker = self.cluster.workers[KILLED_WORKER]
            self.sample_rss()
            for process in self.processes:
                if process.pid == worker.pid:
                    process.killed, process.until = True, clock()
            self.say(f"fault: kill -9 worker {worker.index} (pid {worker.pid})")
            await asyncio.to_thread(self.cluster.kill_worker, worker.index)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.cluster.start_worker, worker.index)
            window.note = f"pid {worker.pid} started on port {worker.port}"
        elif kind == "redis":
            self.say("fault: Redis stopped")
            await asyncio.to_thread(self.redis.stop)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.redis.start)
            window.note = "Redis started again, empty"
        else:
            self.say("fault: PostgreSQL stopped (pg_ctl -m fast)")
            await asyncio.to_thread(self.postgres.stop)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.postgres.start)
            window.note = "PostgreSQL started again"

    async def ready(self) -> bool:
        """Every worker's /healthz answers 200 (database and channel layer).

        Asked from a thread with a client of its own, like the prober: this
        process also runs every socket of the load, and its event loop falls
        behind after a fault (every client catching up at once); a check on
        that loop measured the generator's backlog as the cluster's recovery."""
        return await asyncio.to_thread(self._ready)

    def _ready(self) -> bool:
        deadline = clock() + READY_TIMEOUT
        with httpx.Client(timeout=3) as client:
            while clock() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    answers = [client.get(f"{w.url}/healthz") for w in self.cluster.workers]
                    if all(answer.status_code == 200 for answer in answers):
                        return True
                time.sleep(0.2)
        return False

    # --- Memory and the prober -----------------------------------------------------

    def track_processes(self, settle: float = 0) -> None:
        """Start measuring the workers' processes not measured yet: a restarted
        one from ``settle`` seconds on, once it carries its share of the sockets
        again (it starts with none; visitors come back as their chats end)."""
        known = {process.pid for process in self.processes}
        for worker in self.cluster.workers:
            if worker.pid is not None and worker.running() and worker.pid not in known:
                self.processes.append(Process(worker.index, worker.pid, clock() + settle))
        self.sample_rss()

    def sample_rss(self) -> None:
        now = clock()
        for process in self.processes:
            if not process.killed:
                with contextlib.suppress(OSError):
                    process.end_mb = rss_mb(process.pid)
                    process.end_sockets = open_sockets(process.pid)
                    if math.isnan(process.start_mb) and now >= process.settles_at:
                        process.since, process.start_mb = now, process.end_mb
                        process.start_sockets = process.end_sockets
                    sample = (round(self.at(now), 1), round(process.end_mb, 1))
                    process.samples.append((*sample, process.end_sockets))

    async def watch_memory(self) -> None:
        while True:
            self.sample_rss()
            await asyncio.sleep(5)

    async def probe(self) -> None:
        """The HTTP prober, in a thread of its own (see ``ready``)."""
        stop = threading.Event()
        try:
            await asyncio.to_thread(self._probe, stop)
        finally:
            stop.set()

    def _probe(self, stop: threading.Event) -> None:
        token = self.cluster.env["CP_API_TOKEN"]
        requests: list[tuple[str, dict[str, Any]]] = [
            ("GET /healthz", {"method": "GET", "url": "/healthz"}),
            ("POST /api/identify", {"method": "POST", "url": "/api/identify", "json": IDENTIFY,
                                    "headers": {"Authorization": f"Bearer {token}"}}),
        ]  # fmt: skip
        with httpx.Client(base_url=self.cluster.url, timeout=5) as client:
            while not stop.is_set():
                for what, request in requests:
                    sent = clock()
                    try:
                        status: int | str = client.request(**request).status_code
                    except httpx.HTTPError as error:
                        status = type(error).__name__
                    self.http.append((sent, clock(), what, status))
                stop.wait(self.args.probe_every)

    async def watch_loop(self, every: float = 0.5) -> None:
        """How late this process's event loop wakes (the load generator's own backlog)."""
        while True:
            due = clock() + every
            await asyncio.sleep(every)
            self.loop_lag.append((due, clock() - due))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in [*self.visitors, *self.consoles]:
            if client.ws is not None and client.ws.transport is not None:
                client.ws.transport.abort()


class Visitor:
    """A widget: starts chats and sends messages; after a drop, resumes and sends again."""

    def __init__(self, soak: Soak, index: int) -> None:
        self.soak, self.index = soak, index
        self.ws: ClientConnection | None = None
        self.token: str | None = None  # the conversation's, kept across reconnects
        self.conversation_id = ""
        self.after = 0  # the highest message id seen: a resume replays what follows it
        self.pending: dict[str, Pending] = {}  # client_msg_id -> sent, not acked yet
        self.control: dict[str, Any] | None = None  # start, resume or end awaiting its answer
        self.control_sent = self.start_sent = 0.0
        self.ending = self.end_sent = False
        self.sent = 0

    async def run(self) -> None:
        soak = self.soak
        while True:
            self.ws = await soak.open("visitor", "/ws/chat/")
            if self.token:
                soak.counts["resumes"] += 1
                await self.send_control(
                    {"type": "resume", "token": self.token, "after": self.after}
                )
            else:
                soak.idle[self] = None
            with contextlib.suppress(WebSocketException):
                async for raw in self.ws:
                    await self.on_frame(json.loads(raw))
            self.ws = None
            soak.idle.pop(self, None)
            soak.chatting.pop(self, None)
            if self.control is not None and self.control["type"] == "start":
                soak.counts["starts unanswered when the socket dropped"] += 1
            self.control = None
            if self.token:
                soak.counts["visitor sockets dropped mid-chat"] += 1
            await asyncio.sleep(0.2 + 0.5 * soak.rng.random())

    async def send(self, frame: dict[str, Any]) -> None:
        if self.ws is not None:
            with contextlib.suppress(WebSocketException):  # dropped: the resume sends again
                await self.ws.send(json.dumps(frame))

    async def send_control(self, frame: dict[str, Any]) -> None:
        self.control, self.control_sent = frame, clock()
        await self.send(frame)

    async def transmit(self, client_msg_id: str) -> None:
        pending = self.pending[client_msg_id]
        pending.last_sent = clock()
        await self.send({"type": "message", "text": pending.text, "client_msg_id": client_msg_id})

    async def start(self, email: str) -> None:
        self.start_sent = clock()
        await self.send_control({"type": "start", "email": email})

    async def post(self) -> None:
        if self not in self.soak.chatting:  # its chat began ending after this task was made
            self.soak.counts["messages skipped (no open chat)"] += 1
            return
        self.sent += 1
        client_msg_id = f"v{self.index}.{self.sent}"
        now = clock()
        self.pending[client_msg_id] = Pending(f"soak {client_msg_id} {uuid.uuid4().hex}", now, now)
        self.soak.counts["messages"] += 1
        await self.transmit(client_msg_id)

    async def end(self) -> None:
        """End the chat once its messages are acked and the socket is attached."""
        self.soak.chatting.pop(self, None)
        self.ending = True
        while self.token and (self.pending or self.ws is None or self.control is not None):
            await asyncio.sleep(0.5)
        if self.token:
            self.end_sent = True
            await self.send_control({"type": "end"})

    async def on_frame(self, frame: dict[str, Any]) -> None:
        soak, kind = self.soak, frame["type"]
        if kind == "started":
            answered, self.control = self.control, None
            self.token, self.conversation_id = frame["token"], frame["conversation_id"]
            if answered is not None and answered["type"] == "start":
                soak.start_sent[self.conversation_id] = self.start_sent
                soak.counts["started"] += 1
                loop = asyncio.get_running_loop()
                loop.call_later(soak.chat_seconds, lambda: soak.spawn(self.end()))
            for client_msg_id in list(self.pending):  # after a resume: whatever was not acked
                soak.counts["messages sent again after a resume"] += 1
                await self.transmit(client_msg_id)
            if self.end_sent:
                await self.send_control({"type": "end"})
            elif not self.ending:
                soak.chatting[self] = None
        elif kind == "ack":
            self.after = max(self.after, frame["message_id"])
            soak.ack(self, frame["client_msg_id"], frame["message_id"])
        elif kind == "message":
            self.after = max(self.after, frame["message_id"])
        elif kind == "ended":
            soak.counts["unacked when the chat ended"] += len(self.pending)
            self.pending.clear()
            self.token, self.control, self.after = None, None, 0
            self.ending = self.end_sent = False
            if self.ws is not None:
                await self.ws.close()  # run() connects afresh
        elif kind == "error":
            await self.on_error(frame)

    async def on_error(self, frame: dict[str, Any]) -> None:
        code, client_msg_id = frame["code"], frame.get("client_msg_id")
        self.soak.errors[f"visitor {code}"] += 1
        if code in ("unavailable", "rate_limited"):
            self.soak.spawn(self.retry(client_msg_id))
        elif code == "conversation_ended" and self.pending.pop(client_msg_id, None):
            self.soak.counts["unacked when the chat ended"] += 1
        elif code == "invalid_token" and self.ws is not None:
            self.token = None  # the conversation cannot be resumed: start afresh
            self.soak.counts["unacked in a chat that could not be resumed"] += len(self.pending)
            self.pending.clear()
            await self.ws.close()

    async def retry(self, client_msg_id: str | None) -> None:
        await asyncio.sleep(RETRY_SECONDS)
        if client_msg_id in self.pending:
            await self.transmit(client_msg_id)
        elif client_msg_id is None and self.control is not None:
            await self.send_control(self.control)

    def sweep(self, now: float) -> None:
        if self.ws is None:
            return
        if self.control is not None and now - self.control_sent > STUCK_SECONDS:
            self.soak.counts[f"sockets given up ({self.control['type']} unanswered)"] += 1
            self.control = None
            self.soak.spawn(self.ws.close())
            return
        for client_msg_id, pending in self.pending.items():
            if now - pending.last_sent > RESEND_SECONDS:
                self.soak.counts["messages sent again (no answer)"] += 1
                self.soak.spawn(self.transmit(client_msg_id))


class Console:
    """An agent's console: watches its share of the conversations; reconnects when dropped."""

    def __init__(self, soak: Soak, index: int, cookie: str) -> None:
        self.soak, self.index, self.cookie = soak, index, cookie
        self.ws: ClientConnection | None = None

    async def run(self) -> None:
        soak = self.soak
        while True:
            self.ws = await soak.open("console", "/ws/console/", self.cookie)
            with contextlib.suppress(WebSocketException):
                async for raw in self.ws:
                    await self.on_frame(json.loads(raw))
            soak.counts[f"console sockets closed ({self.ws.close_code})"] += 1
            self.ws = None
            await asyncio.sleep(0.5 + soak.rng.random())

    async def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "snapshot":
            self.soak.counts["console snapshots"] += 1
            for conversation in frame["conversations"]:
                await self.watch(conversation["id"])
        elif kind == "conversation":
            conversation_id = frame["conversation"]["id"]
            if frame["event"] == "started":
                await self.watch(conversation_id)
            elif frame["event"] == "identified":
                self.soak.identified.append((conversation_id, clock()))
        elif kind == "message":
            self.soak.counts["message frames on consoles"] += 1
        elif kind == "error":
            self.soak.errors[f"console {frame['code']}"] += 1

    async def watch(self, conversation_id: str) -> None:
        mine = int(conversation_id[:8], 16) % len(self.soak.consoles) == self.index
        if mine and self.ws is not None:
            with contextlib.suppress(WebSocketException):
                await self.ws.send(
                    json.dumps({"type": "watch", "conversation_id": conversation_id})
                )


def stored_messages(database_url: str) -> dict[int, tuple[str, str, str]]:
    """Visitor messages in the database: id -> (conversation id, client_msg_id, text)."""
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT id, conversation_id::text, client_msg_id, text FROM chat_message "
            "WHERE sender = 'visitor'"
        ).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def latency(samples: list[tuple[float, float]], windows: list[Window]) -> dict[str, float]:
    """p50/p99 in ms of the (sent, answered) pairs that no fault window touches."""
    clear = [b - a for a, b in samples if not any(w.covers(a, b) for w in windows)]
    return {"samples": len(clear), "p50_ms": pct(clear, 0.5), "p99_ms": pct(clear, 0.99)}


def loop_lag(samples: list[tuple[float, float]], soak: Soak) -> dict[str, float]:
    """How late the generator's event loop woke, over the whole measured run, in ms."""
    lags = [late for _, late in samples]
    worst = max(samples, key=lambda sample: sample[1], default=(soak.t0, math.nan))
    return {"p50_ms": pct(lags, 0.5), "p99_ms": pct(lags, 0.99), "max_ms": 1000 * worst[1],
            "max_at_s": round(soak.at(worst[0]), 1)}  # fmt: skip


async def drive(soak: Soak) -> dict[str, Any]:
    args, cluster = soak.args, soak.cluster
    cookie = await asyncio.to_thread(login, cluster.url)
    soak.consoles = [Console(soak, i, cookie) for i in range(args.consoles)]
    soak.visitors = [Visitor(soak, i) for i in range(args.visitors)]
    for client in [*soak.consoles, *soak.visitors]:
        soak.spawn(client.run())
    while len(soak.idle) < args.visitors:
        await asyncio.sleep(0.1)
    for background in (soak.sweep(), soak.probe()):
        soak.spawn(background)
    soak.say(f"{args.consoles} consoles and {args.visitors} visitors connected; "
             f"warm-up {args.warm_up:g} s")  # fmt: skip
    await soak.load(args.warm_up)

    soak.t0 = clock()
    soak.track_processes()
    soak.spawn(soak.watch_memory())
    soak.spawn(soak.watch_loop())
    plan = soak.schedule()
    soak.say(f"measuring for {args.duration:g} s; faults at "
             + (", ".join(f"{at:g} s {kind}" for at, kind in plan) or "none"))  # fmt: skip
    await asyncio.gather(soak.load(args.duration), soak.faults(plan))
    finished = clock()
    soak.say("load stopped; waiting for the last acks")
    while any(v.pending for v in soak.visitors) and clock() - finished < args.drain:
        await asyncio.sleep(0.2)
    soak.sample_rss()
    for process in soak.processes:
        if not process.killed:
            process.until = clock()
    unacked = sum(len(v.pending) for v in soak.visitors)
    await soak.close()

    stored = await asyncio.to_thread(stored_messages, cluster.database_url)
    found = sum(
        stored.get(acked.message_id) == (acked.conversation_id, client_msg_id, acked.text)
        for client_msg_id, acked in soak.acked.items()
    )
    tracebacks = Counter(
        re.sub(r"\d+", "N", match.group(1))  # Task-63214 and Task-62016 alike
        for worker in cluster.workers
        for match in TRACEBACK.finditer(worker.log.read_text(errors="replace"))
    )
    return report(soak, found, len(stored), unacked, tracebacks)


def open_sockets(pid: int) -> int:
    """Sockets the process holds: its clients' connections through nginx, and a
    few of its own (PostgreSQL, Redis, the listening one)."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += fd.readlink().name.startswith("socket:")
    return count


def report(
    soak: Soak, found: int, stored: int, unacked: int, tracebacks: Counter[str]
) -> dict[str, Any]:
    args, windows = soak.args, soak.windows
    http = {"requests": 0, "5xx in windows": 0, "5xx outside windows": 0,
            "no answer in windows": 0, "no answer outside windows": 0}  # fmt: skip
    outside: list[str] = []
    for sent, answered, what, status in soak.http:
        http["requests"] += what.startswith(("GET", "POST"))
        failed = "no answer" if isinstance(status, str) else "5xx" if status >= 500 else ""
        if failed:
            covered = any(w.covers(sent, answered) for w in windows)
            http[f"{failed} {'in' if covered else 'outside'} windows"] += 1
            if not covered:
                outside.append(f"{soak.at(sent):.1f} s {what}: {status}")
    starts = [(soak.start_sent[c], t) for c, t in soak.identified if c in soak.start_sent]
    measured = [(a, b) for a, b in starts if a >= soak.t0]
    result: dict[str, Any] = {
        "load": {"workers": args.workers, "visitors": args.visitors, "consoles": args.consoles,
                 "starts/s": args.starts_per_second, "messages/s": args.messages_per_second,
                 "duration": args.duration, "warm-up": args.warm_up},
        "faults": [{"fault": w.fault, "start_s": round(soak.at(w.start), 1),
                    "recovered_s": round(soak.at(w.recovered), 1),
                    "end_s": round(soak.at(w.end), 1), "note": w.note} for w in windows],
        "messages": {"sent": soak.counts["messages"], "acked": len(soak.acked), "found": found,
                     "lost": len(soak.acked) - found, "unacked at the end": unacked,
                     "visitor messages stored": stored},
        "http": http | {"outside windows": outside[:20]},
        "rss": [asdict(p) | {"since": round(soak.at(p.since), 1),
                             "until": round(soak.at(p.until), 1),
                             "growth_pct": round(p.growth, 1)} for p in soak.processes],
        "latency": {
            "start -> identified (consoles)": latency(measured, windows),
            "message -> ack (visitor)": latency(
                [(a, b) for a, b in soak.ack_times if a >= soak.t0], windows
            ),
        },
        "counts": dict(soak.counts), "error frames": dict(soak.errors),
        "load average": Path("/proc/loadavg").read_text().split()[:3],
        "generator loop lag": loop_lag(soak.loop_lag, soak),
        "worker tracebacks": dict(tracebacks.most_common()),
    }  # fmt: skip
    failures = []
    if result["messages"]["lost"]:
        failures.append(f"{result['messages']['lost']} acked messages are not in the database")
    if not soak.acked:
        failures.append("no message was acked")
    if http["5xx outside windows"] or http["no answer outside windows"]:
        failures.append("HTTP 5xx or unanswered requests outside the fault windows")
    failures += [f"fault {w.fault} at {soak.at(w.start):.0f} s did not recover"
                 for w in windows if w.recovered == math.inf]  # fmt: skip
    failures += [f"worker {p.worker} (pid {p.pid}) RSS grew {p.growth:.0f} %"
                 for p in soak.processes if p.growth > args.max_rss_growth]  # fmt: skip
    result["failures"] = failures
    return result


def show(result: dict[str, Any]) -> None:
    load, m, http = result["load"], result["messages"], result["http"]
    print(f"\nsoak: {load['workers']} workers, {load['visitors']} visitors, {load['consoles']} "
          f"consoles, {load['starts/s']:g} starts/s, {load['messages/s']:g} messages/s, "
          f"{load['duration']:g} s after a {load['warm-up']:g} s warm-up")  # fmt: skip
    for f in result["faults"]:
        print(f"  fault {f['fault']:8} {f['start_s']:7.1f} s .. recovered {f['recovered_s']:7.1f} s"
              f" .. window ends {f['end_s']:7.1f} s  ({f['note']})")  # fmt: skip
    print(f"  messages: {m['sent']} sent, {m['acked']} acked, {m['found']} found in the database, "
          f"LOST {m['lost']}; {m['unacked at the end']} unacked at the end")  # fmt: skip
    silent, silent_outside = http["no answer in windows"], http["no answer outside windows"]
    print(f"  HTTP: {http['requests']} prober requests; 5xx in fault windows "
          f"{http['5xx in windows']}, OUTSIDE {http['5xx outside windows']}; no answer in "
          f"windows {silent}, OUTSIDE {silent_outside}")  # fmt: skip
    for line in http["outside windows"]:
        print(f"    outside: {line}")
    for p in result["rss"]:
        end = "killed" if p["killed"] else "end"
        if math.isnan(p["start_mb"]):
            print(f"  RSS worker {p['worker']} pid {p['pid']}: not measured (it ended before "
                  f"it settled), {p['end_mb']:.1f} MB at {p['until']:.0f} s ({end})")  # fmt: skip
        else:
            print(f"  RSS worker {p['worker']} pid {p['pid']}: {p['start_mb']:.1f} MB at "
                  f"{p['since']:.0f} s -> {p['end_mb']:.1f} MB at {p['until']:.0f} s ({end}): "
                  f"{p['growth_pct']:+.1f} %; sockets {p['start_sockets']} -> "
                  f"{p['end_sockets']}")  # fmt: skip
        print("    over time (s MB sockets): " + ", ".join(
            f"{t:g} {mb:g} {n}" for t, mb, n in p["samples"][::6]))  # fmt: skip
    for name, lat in result["latency"].items():
        print(f"  {name} outside fault windows: p50 {lat['p50_ms']:.0f} ms, "
              f"p99 {lat['p99_ms']:.0f} ms ({lat['samples']} samples)")  # fmt: skip
    print(f"  counts: {result['counts']}")
    print(f"  load average at the end: {' '.join(result['load average'])}")
    lag = result["generator loop lag"]
    print(f"  this load generator's event loop woke late by: p50 {lag['p50_ms']:.0f} ms, "
          f"p99 {lag['p99_ms']:.0f} ms, max {lag['max_ms']:.0f} ms at {lag['max_at_s']:.0f} s "
          "(its latencies include this)")  # fmt: skip
    print(f"  error frames: {result['error frames'] or 'none'}")
    print(f"  tracebacks in the worker logs, by the line before each: "
          f"{result['worker tracebacks'] or 'none'}")  # fmt: skip
    print("FAIL: " + "; ".join(result["failures"]) if result["failures"] else "PASS")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    raise_open_files(2 * (args.visitors + args.consoles) + 1000)
    began = clock()
    directory = Path(tempfile.mkdtemp(prefix="cpweb-soak-"))
    redis, postgres = PrivateRedis(directory), PrivatePostgres()
    try:
        await asyncio.to_thread(redis.start)
        await asyncio.to_thread(postgres.init)
        await asyncio.to_thread(postgres.start)
        env = {**ONE_ADDRESS, "REDIS_URL": redis.url, "DATABASE_URL": postgres.url}
        cluster = Cluster(workers=args.workers, fresh_database=True, env=env, var_dir=args.var_dir)
        await asyncio.to_thread(cluster.start)
        print(f"private Redis, PostgreSQL and {args.workers} workers up in "
              f"{clock() - began:.0f} s", flush=True)  # fmt: skip
        try:
            return await drive(Soak(cluster, redis, postgres, args))
        finally:
            await asyncio.to_thread(cluster.stop)
    finally:
        with contextlib.suppress(RuntimeError):  # stopped already if a fault failed midway
            postgres.stop()
        postgres.remove()
        redis.stop()
        shutil.rmtree(directory, ignore_errors=True)
        print(f"soak done in {clock() - began:.0f} s", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=2000)
    parser.add_argument("--consoles", type=int, default=200)
    parser.add_argument("--starts-per-second", type=float, default=50)
    parser.add_argument("--messages-per-second", type=float, default=300)
    parser.add_argument("--duration", type=float, default=600, help="seconds measured (600)")
    parser.add_argument("--warm-up", type=float, default=30, help="seconds of load before (30)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help="in turn, from worker,redis,postgres ('' for none)")  # fmt: skip
    parser.add_argument("--fault-every", type=float, default=90, help="seconds (90)")
    parser.add_argument("--fault-seconds", type=float, default=5, help="down time (5)")
    parser.add_argument("--grace", type=float, default=5, help="window after recovery (5)")
    parser.add_argument("--drain", type=float, default=30, help="seconds for the last acks")
    parser.add_argument("--probe-every", type=float, default=0.2, help="seconds (0.2)")
    parser.add_argument("--max-rss-growth", type=float, default=25, help="percent (25)")
    parser.add_argument("--settle", type=float, default=30,
                        help="seconds after its fault window before a restarted worker's RSS is "
                             "measured (30)")  # fmt: skip
    parser.add_argument("--var-dir", help="keep the cluster's logs here")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    if unknown := set(args.faults.split(",")) - {*FAULTS, ""}:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    if args.workers <= KILLED_WORKER and "worker" in args.faults:
        parser.error("killing a worker needs --workers 2 or more (worker 0 is never killed)")
    return args


if __name__ == "__main__":
    arguments = parse()
    outcome = asyncio.run(main(arguments))
    show(outcome)
    if arguments.json:
        arguments.json.write_text(json.dumps(outcome, indent=2, default=str))
    sys.exit(1 if outcome["failures"] else 0)
