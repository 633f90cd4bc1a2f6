"""Web chat load: cpweb's start → identified latency next to a bare Channels broadcast room.

    .venv/bin/python bench/webchat_load.py                 # 500 visitors, 50 consoles, 30 s
    .venv/bin/python bench/webchat_load.py --visitors 50 --consoles 5 --duration 5   # smoke

Method. cpweb runs as ONE daphne process (a fresh var dir and SQLite file in bench/out/,
or --database-url PostgreSQL; the in-memory channel layer), migrated, with the demo
directory. This script is the load generator: one process, one asyncio loop, `websockets`
clients, time.perf_counter. C agent consoles log in through the real login page, connect
with that cookie and an Origin and wait for their snapshot; V visitor sockets connect up
front. Then, open loop (nothing waits for a reply), at fixed rates: `start` frames from idle
visitors (~50% demo-directory emails, ~10% the shared support@nordicbikes.se, the rest
unknown), and `message` frames (each with a client_msg_id) from visitors in a chat. A chat
lasts --chat-seconds (default V / (2 * start rate): about half the visitors chat at any
time), then the visitor sends `end` and reconnects on a fresh socket, so ~V sockets stay
open. A start due when no visitor is idle is skipped and counted. A 1 s warm-up at the same
rates comes first and is not counted.

Measured: the time from sending `start` to the `identified` frame arriving on EVERY console
(matched by conversation id afterwards, since a console can see it before the visitor sees
`started`), start → `started`, message → ack, lifecycle frames (started, identified, ended)
delivered to consoles, losses (expected = starts * consoles; a frame not there 5 s after
the last send counts as lost), and CPU time: the server's (/proc/PID/stat, all threads),
this generator's, and everything else's on the machine (PostgreSQL included, if used): a
busy neighbour skews the numbers, and the report says so.

Baseline. The same run then starts the Channels tutorial's chat room (bench/broadcast) in
one daphne process; C members join a room and one more socket sends to it at the rate that
gives each member as many frames a second as a cpweb console got, padded to the same mean
size, for the same duration; latency is send → receipt at every member.

Fairness: same machine, daphne, client code, frame count and frame size. cpweb's clock
starts before its real work (identify, insert, commit, publish) while the room's starts at
its send, so the comparison is tilted against cpweb; the room's sender is a member too
(C + 1 sends per message, C counted). On 2 cores the server and the generator each get
about one: "generator CPU" near 100% would mean the client, not the server, is the limit.
"""

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
DAPHNE = str(Path(sys.executable).with_name("daphne"))
WARM_UP, DRAIN = 1.0, 5.0
SHARED = "support@nordicbikes.se"
sys.path.insert(0, str(REPO))
from directory.demo import DEMO_CONTACTS  # noqa: E402

KNOWN = sorted({e.lower() for c in DEMO_CONTACTS for e in c.get("emails", [])} - {SHARED})


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of seconds, in ms (q=1: the maximum)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return 1000 * ordered[max(0, min(len(ordered), math.ceil(q * len(ordered))) - 1)]


def cpu_seconds(pid: int | None = None) -> float:
    """utime + stime of a process (every thread), or the machine's busy time (all CPUs)."""
    if pid is None:
        user, nice, system, _idle, _iowait, *rest = Path("/proc/stat").read_text().split()[1:9]
        ticks = sum(int(x) for x in (user, nice, system, *rest))
    else:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Server:
    """A server process on a free port, up once it accepts TCP connections.

    ``@PORT@`` in ``command`` becomes the port.
    """

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], log: Path,
        start_timeout: float = 30,
    ) -> None:  # fmt: skip
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.name, self.log = name, log.open("w")
        self.url = f"ws://127.0.0.1:{self.port}"
        command = [part.replace("@PORT@", str(self.port)) for part in command]
        self.proc = subprocess.Popen(  # noqa: S603
            command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start; see {log}") from None
                time.sleep(0.1)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def stop(self) -> None:
        self.proc.terminate()
        try:  # daphne gives application instances 10 s to finish
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def prepare_cpweb(database_url: str | None) -> tuple[dict[str, str], Path, str]:
    """A fresh var dir, a migrated database with the demo directory: (env, var dir, db)."""
    OUT.mkdir(exist_ok=True)
    var = Path(tempfile.mkdtemp(prefix="webchat_load-", dir=OUT))  # runs may overlap
    # No REDIS_URL: one process on the in-memory layer, like the broadcast room.
    skip = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env |= {"CPWEB_VAR_DIR": str(var), "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"}
    # Every simulated visitor comes from 127.0.0.1: lift the per-address limits.
    env |= {"CP_WEBCHAT_STARTS_PER_MINUTE": "0", "CP_WS_MAX_SOCKETS_PER_ADDRESS": "0"}
    database = f"SQLite {var / 'cpweb.sqlite3'}"
    if database_url:
        import psycopg

        base, _, name = database_url.rpartition("/")
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                admin.execute(f'CREATE DATABASE "{name}"')
        env["DATABASE_URL"], database = database_url, f"PostgreSQL {name}"
    for command in (["migrate", "--noinput"], ["demo_setup"]):
        subprocess.run(  # noqa: S603
            [sys.executable, "manage.py", *command],
            cwd=REPO, env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    return env, var, database


def login(http_url: str) -> str:
    """The demo agent's session cookie, through the real login page."""
    with httpx.Client(base_url=http_url, timeout=10) as client:
        client.get("/accounts/login/")
        form = {"username": "agent", "password": "cpweb-agent-demo", "next": "/console/"}
        form["csrfmiddlewaretoken"] = client.cookies["csrftoken"]
        if (status := client.post("/accounts/login/", data=form).status_code) != 302:
            raise RuntimeError(f"login failed: HTTP {status}")
        return f"sessionid={client.cookies['sessionid']}"


async def paced(rate: float, seconds: float, tick, lags: list[float]) -> None:
    """Call ``tick(n)`` at t0 + n / rate for ``seconds``; record how late each call was."""
    t0, n = time.perf_counter(), 0
    while rate > 0 and n / rate < seconds:
        due = t0 + n / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        lags.append(time.perf_counter() - due)
        await tick(n)
        n += 1


class Load:
    """What both servers share: a server, C consoles, a warm-up and a measured phase."""

    def __init__(self, server: Server, args: argparse.Namespace) -> None:
        self.server, self.args, self.consoles, self.phase_no = server, args, args.consoles, 0
        self.tasks: set[asyncio.Task] = set()
        self.reset()

    def spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    def reset(self) -> None:
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.frames = self.size = 0
        self.window_end = math.inf

    def count(self, raw: str, now: float) -> None:
        if now <= self.window_end:
            self.frames, self.size = self.frames + 1, self.size + len(raw)

    async def run(self) -> dict:
        await self.phase(WARM_UP)
        return await self.phase(self.args.duration)

    async def phase(self, seconds: float) -> dict:
        self.phase_no += 1
        self.reset()
        pid = self.server.proc.pid
        cpu0, all0, gen0 = cpu_seconds(pid), cpu_seconds(), time.process_time()
        t0 = time.perf_counter()
        self.window_end = t0 + seconds
        await asyncio.gather(*(paced(r, seconds, tick, self.lags) for r, tick in self.rates()))
        await asyncio.sleep(max(0.0, self.window_end - time.perf_counter()))
        cpu, gen = cpu_seconds(pid) - cpu0, time.process_time() - gen0
        others = cpu_seconds() - all0 - cpu - gen  # other processes competing for the 2 CPUs
        deadline = time.perf_counter() + DRAIN
        while not self.complete() and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        lat, frames = self.latencies, max(1, self.frames)
        return {"frames/s": self.frames / seconds, "frame size": self.size / frames,
                "latency p50 ms": pct(lat, 0.5), "latency p99 ms": pct(lat, 0.99),
                "latency max ms": pct(lat, 1), "frames expected": self.expected(),
                "frames lost": self.expected() - len(lat), "server CPU %": 100 * cpu / seconds,
                "server CPU µs/frame": 1e6 * cpu / frames, "generator CPU %": 100 * gen / seconds,
                "generator lag p99 ms": pct(self.lags, 0.99),
                "other processes CPU %": 100 * others / seconds}  # fmt: skip


class CpwebLoad(Load):
    def __init__(self, server: Server, args: argparse.Namespace, cookie: str) -> None:
        super().__init__(server, args)
        self.cookie, self.origin = cookie, server.url.replace("ws:", "http:")
        self.chat_seconds = args.chat_seconds or args.visitors / (2 * args.starts_per_second)
        self.rng, self.gate = random.Random(2024), asyncio.Semaphore(50)
        self.idle: asyncio.Queue = asyncio.Queue()
        self.chatting: list = []

    def rates(self) -> list:
        return [(self.args.starts_per_second, self.start),
                (self.args.messages_per_second, self.message)]  # fmt: skip

    def reset(self) -> None:
        super().reset()
        self.sent_at: dict[str, float] = {}  # conversation id -> its start's send time
        self.arrivals: defaultdict[str, list[float]] = defaultdict(list)  # ... -> per console
        self.ack_due: dict[str, float] = {}
        self.started_lat: list[float] = []
        self.ack_lat: list[float] = []
        self.starts = self.messages = 0
        self.errors: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    async def open(self) -> None:
        headers = {"Cookie": self.cookie}
        for _ in range(self.consoles):
            ws = await connect(f"{self.server.url}/ws/console/", origin=self.origin,
                               additional_headers=headers, compression=None)  # fmt: skip
            if json.loads(await ws.recv())["type"] != "snapshot":
                raise RuntimeError("a console got no snapshot")
            self.spawn(self.console(ws))
        for _ in range(self.args.visitors):
            self.spawn(self.visitor())
        while self.idle.qsize() < self.args.visitors:
            await asyncio.sleep(0.05)

    async def console(self, ws) -> None:
        async for raw in ws:
            now, frame = time.perf_counter(), json.loads(raw)
            if frame["type"] == "conversation":
                self.count(raw, now)
                if frame["event"] == "identified":
                    self.arrivals[frame["conversation"]["id"]].append(now)

    async def visitor(self) -> None:
        """One visitor slot: connect, wait to be picked, chat, end, connect again."""
        while True:
            try:
                async with self.gate:
                    ws = await connect(f"{self.server.url}/ws/chat/", origin=self.origin,
                                       compression=None)  # fmt: skip
                ws.sent_at = 0.0
                self.idle.put_nowait(ws)
                async for raw in ws:
                    self.on_visitor_frame(ws, raw)
            except (OSError, WebSocketException) as exc:  # a saturated server drops handshakes
                self.errors[f"visitor socket: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)

    def on_visitor_frame(self, ws, raw: str) -> None:
        now, frame = time.perf_counter(), json.loads(raw)
        if frame["type"] == "ack":
            if (sent := self.ack_due.pop(frame["client_msg_id"], None)) is not None:
                self.ack_lat.append(now - sent)
        elif frame["type"] == "started":
            self.sent_at[frame["conversation_id"]] = ws.sent_at
            self.started_lat.append(now - ws.sent_at)
            self.chatting.append(ws)
            asyncio.get_running_loop().call_later(self.chat_seconds, self.end_chat, ws)
        elif frame["type"] == "ended":
            self.spawn(ws.close())  # ends the slot's `async for`: it connects afresh
        elif frame["type"] == "error":
            self.errors[frame["code"]] += 1

    def end_chat(self, ws) -> None:
        if ws in self.chatting:
            self.chatting.remove(ws)
            self.spawn(ws.send('{"type":"end"}'))

    async def send(self, ws, frame: dict) -> None:
        try:
            await ws.send(json.dumps(frame))
        except WebSocketException as exc:
            self.errors[f"send: {type(exc).__name__}"] += 1

    async def start(self, n: int) -> None:
        try:
            ws = self.idle.get_nowait()
        except asyncio.QueueEmpty:
            self.skipped["starts (no idle visitor)"] += 1
            return
        draw = self.rng.random()
        email = (self.rng.choice(KNOWN) if draw < 0.5 else SHARED if draw < 0.6
                 else f"visitor-{uuid.uuid4().hex[:12]}@example.org")  # fmt: skip
        self.starts += 1
        ws.sent_at = time.perf_counter()
        await self.send(ws, {"type": "start", "email": email, "name": "Load Visitor"})

    async def message(self, n: int) -> None:
        if not self.chatting:
            self.skipped["messages (no open chat)"] += 1
            return
        ws, msg_id = self.rng.choice(self.chatting), f"p{self.phase_no}-m{n}"
        self.messages += 1
        self.ack_due[msg_id] = time.perf_counter()
        await self.send(ws, {"type": "message", "text": f"Hello {n}", "client_msg_id": msg_id})

    def expected(self) -> int:
        return self.starts * self.consoles

    def complete(self) -> bool:
        self.latencies = [t - sent for c, sent in self.sent_at.items() for t in self.arrivals[c]]
        return len(self.latencies) >= self.expected() and not self.ack_due

    async def run(self) -> dict:
        result = await super().run()
        return result | {
            "starts": self.starts, "started": len(self.sent_at), "skipped": dict(self.skipped),
            "started p50": pct(self.started_lat, 0.5), "started p99": pct(self.started_lat, 0.99),
            "messages": self.messages, "acks": len(self.ack_lat), "errors": dict(self.errors),
            "ack p50": pct(self.ack_lat, 0.5), "ack p99": pct(self.ack_lat, 0.99),
        }  # fmt: skip


class BroadcastLoad(Load):
    def __init__(self, server: Server, args: argparse.Namespace, rate: float, size: float) -> None:
        super().__init__(server, args)
        self.rate = rate
        self.pad = "x" * max(0, round(size) - 60)  # {"message": {"t": …, "pad": "xx…"}}

    def rates(self) -> list:
        return [(self.rate, self.send)]

    def reset(self) -> None:
        super().reset()
        self.sent = 0

    async def open(self) -> None:
        url = f"{self.server.url}/ws/chat/bench/"
        for _ in range(self.consoles):
            self.spawn(self.member(await connect(url, compression=None)))
        self.sender = await connect(url, compression=None)
        self.spawn(self.member(self.sender, counted=False))

    async def member(self, ws, counted: bool = True) -> None:
        async for raw in ws:
            now, message = time.perf_counter(), json.loads(raw)["message"]
            if counted and message["phase"] == self.phase_no:
                self.count(raw, now)
                self.latencies.append(now - message["t"])

    async def send(self, n: int) -> None:
        self.sent += 1
        message = {"t": time.perf_counter(), "phase": self.phase_no, "pad": self.pad}
        await self.sender.send(json.dumps({"message": message}))

    def expected(self) -> int:
        return self.sent * self.consoles

    def complete(self) -> bool:
        return len(self.latencies) >= self.expected()


async def measure(app: str, env: dict[str, str], log: Path, make_load) -> dict:
    """Start a server, open the load's sockets, run it, stop everything."""
    server, load = Server(app, [DAPHNE, "-b", "127.0.0.1", "-p", "@PORT@", app], env, log), None
    try:
        load = await make_load(server)
        await load.open()
        return await load.run()
    finally:
        for task in list(load.tasks if load else ()):
            task.cancel()
        server.stop()


async def main(args: argparse.Namespace) -> bool:
    env, var, database = prepare_cpweb(args.database_url)

    async def cpweb_load(server: Server) -> CpwebLoad:
        cookie = await asyncio.to_thread(login, server.url.replace("ws:", "http:"))
        return CpwebLoad(server, args, cookie)

    cpweb = await measure("cpweb.asgi:application", env, var / "daphne.log", cpweb_load)
    room_rate = cpweb["frames/s"] / args.consoles  # messages a second into the room

    async def room_load(server: Server) -> BroadcastLoad:
        return BroadcastLoad(server, args, room_rate, cpweb["frame size"])

    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    app = "bench.broadcast.asgi:application"
    bare = await measure(app, env, var / "broadcast_daphne.log", room_load)
    shutil.rmtree(var)  # kept, with the daphne logs, when a run breaks off
    return report(args, database, cpweb, bare, room_rate)


def report(args, database: str, cpweb: dict, bare: dict, room_rate: float) -> bool:
    print(f"web chat load: {args.visitors} visitors, {args.consoles} consoles, "
          f"{args.starts_per_second:g} starts/s, {args.messages_per_second:g} messages/s, "
          f"{args.duration:g} s; one daphne process per server; cpweb on {database}")  # fmt: skip
    print(f"broadcast room: {room_rate:.1f} messages/s to {args.consoles} members + 1 sender")
    print("latency: cpweb start → identified on every console; room send → receipt\n")
    print(f"{'':24}{'cpweb':>12}{'broadcast':>12}")
    for key in bare:
        print(f"{key:24}{cpweb[key]:>12.1f}{bare[key]:>12.1f}")
    print(f"\ncpweb: {cpweb['starts']} starts, {cpweb['started']} started, start → started "
          f"p50 {cpweb['started p50']:.1f} ms p99 {cpweb['started p99']:.1f} ms; "
          f"{cpweb['messages']} messages, {cpweb['acks']} acks, message → ack "
          f"p50 {cpweb['ack p50']:.1f} ms p99 {cpweb['ack p99']:.1f} ms")  # fmt: skip
    print(f"cpweb skipped: {cpweb['skipped'] or 'none'}; errors: {cpweb['errors'] or 'none'}")
    p50, p99 = (cpweb[f"latency {q} ms"] / bare[f"latency {q} ms"] for q in ("p50", "p99"))
    print(f"ratio cpweb / broadcast: p50 {p50:.2f}, p99 {p99:.2f}\n")
    lossless = cpweb["frames lost"] == bare["frames lost"] == 0 and not cpweb["errors"]
    lossless &= cpweb["started"] == cpweb["starts"] and cpweb["acks"] == cpweb["messages"]
    p99_ms = cpweb["latency p99 ms"]
    checks = [(f"p99 start → identified {p99_ms:.1f} ms < 50 ms", p99_ms < 50),
              ("zero loss (identified frames, started, acks; no errors)", lossless),
              ("offered load applied (no skipped starts or messages)", not cpweb["skipped"]),
              (f"p99 ratio cpweb / broadcast {p99:.2f} <= 1", p99 <= 1)]  # fmt: skip
    if max(cpweb["other processes CPU %"], bare["other processes CPU %"]) > 10:
        print("WARNING: other processes used the CPUs during the run: the numbers are skewed")
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'} {text}")
    return all(ok for _, ok in checks)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=500)
    parser.add_argument("--consoles", type=int, default=50)
    parser.add_argument("--starts-per-second", type=float, default=20)
    parser.add_argument("--messages-per-second", type=float, default=100)
    parser.add_argument("--duration", type=float, default=30, help="seconds measured")
    parser.add_argument("--chat-seconds", type=float, default=0, help="default V / (2 * rate)")
    parser.add_argument("--database-url", help="postgres://…/NAME (created if missing)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    arguments = parser.parse_args()
    sys.exit(1 if not asyncio.run(main(arguments)) and arguments.strict else 0)
