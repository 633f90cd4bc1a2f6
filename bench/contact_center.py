"""Contact-center load on N daphne workers + nginx + Redis + PostgreSQL, 1 worker vs 2.

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/cpweb_bench
    export REDIS_URL=redis://127.0.0.1:6379/5
    .venv/bin/python bench/contact_center.py   # 2,000 visitors, 200 consoles, 50 + 300 a second
    .venv/bin/python bench/contact_center.py --visitors 100 --consoles 10 --starts-per-second 5 \\
        --messages-per-second 20 --duration 3 --workers 1,2     # smoke

For each worker count (--workers, default 1 then 2) a fresh cluster is started with
deploy.cluster (its own PostgreSQL database beside DATABASE_URL's, dropped afterwards, its
own Redis prefix, nginx in front; per-address limits lifted, since every simulated
visitor comes from 127.0.0.1). Then, all through nginx:

- C agent consoles sign in through the real login page and connect (`/ws/console/`), in
  --client-processes processes (bench/_consoles.py). Each conversation is watched by one
  console (picked by its id) as soon as that console sees it start: the console gets
  its messages from then on (and its history, if a message came first).
- V visitor sockets (`/ws/chat/`) connect up front (this process, `websockets`).
- Worker RSS and open sockets (/proc) are read before and after: memory per socket.
- Open loop for --duration seconds after a --warm-up at the same rates: `start` from idle
  visitors (half known directory emails), `message` from visitors in a chat, each chat
  `end`ed after V / (2 * start rate) seconds and its visitor reconnecting afresh. The
  warm-up lasts one chat and 3 s more by default, so that the measured window is the
  steady state: chats ending and visitors reconnecting as fast as chats start (a
  shorter warm-up measures a lighter load: 2 events a chat instead of 3).

Measured: start → identified on every console, message → the watching console,
start → started and message → ack at the visitor, lifecycle frames (started,
identified, ended) and message frames lost (not there --drain s after the last send),
CPU of each worker, of this generator and its console processes, and of everything
else (nginx, PostgreSQL, Redis, other users). A worker count "holds" the load with zero
loss, no errors, every start started and every message acked, and p99 start →
identified under 1 s; if one does not, the run is repeated at half the rates (at most
--halvings times, default 2) to find a rate it holds.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _consoles import ConsolePool, kind_of
from webchat_load import KNOWN, cpu_seconds, login, pct

from deploy.cluster import Cluster

HOLD_P99 = 1.0
# Every simulated visitor comes from 127.0.0.1: lift the per-address limits.
ONE_ADDRESS = {"CP_WEBCHAT_STARTS_PER_MINUTE": "0", "CP_WS_MAX_SOCKETS_PER_ADDRESS": "0"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def raise_open_files(need: int) -> None:
    """One file descriptor per socket: raise the soft limit towards ``need``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))


def sockets(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(fd).startswith("socket:")
    return count


class Visitors:
    """V visitor sockets: idle ones wait to start a chat; chatting ones send messages."""

    def __init__(self, url: str, origin: str, count: int, chat_seconds: float) -> None:
        self.url, self.origin, self.count, self.chat_seconds = url, origin, count, chat_seconds
        self.idle: asyncio.Queue[ClientConnection] = asyncio.Queue()
        self.chatting: list[ClientConnection] = []
        self.gate = asyncio.Semaphore(50)
        self.rng = random.Random(5)
        self.tasks: set[asyncio.Task] = set()
        self.reset()

    def reset(self) -> None:
        self.sent: dict[bytes, float] = {}  # console frame key -> send time
        self.start_sent: dict[int, float] = {}
        self.started: list[float] = []
        self.ack_due: dict[str, float] = {}
        self.acks: list[float] = []
        self.starts = self.messages = 0
        self.stopped = False
        self.errors: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def open(self) -> None:
        for _ in range(self.count):
            self.spawn(self.slot())
        while self.idle.qsize() < self.count:
            await asyncio.sleep(0.1)

    async def slot(self) -> None:
        while True:
            try:
                async with self.gate:
                    ws = await connect(f"{self.url}/ws/chat/", origin=self.origin,
                                       compression=None, max_queue=None)  # fmt: skip
                self.idle.put_nowait(ws)
                async for raw in ws:
                    self.on_frame(ws, raw)
            except (OSError, WebSocketException) as exc:
                self.errors[f"visitor socket: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)

    def on_frame(self, ws: ClientConnection, raw: str | bytes) -> None:
        now, frame = time.perf_counter(), json.loads(raw)
        kind = frame["type"]
        if kind == "ack":
            if (sent := self.ack_due.pop(frame["client_msg_id"], None)) is not None:
                self.acks.append(now - sent)
        elif kind == "started":
            sent_at = self.start_sent.pop(id(ws), None)
            if sent_at is None:
                return
            key = frame["conversation_id"].encode()
            self.sent[key + b":started"] = self.sent[key + b":identified"] = sent_at
            self.started.append(now - sent_at)
            self.chatting.append(ws)
            ws.conversation_key = key  # type: ignore[attr-defined]
            asyncio.get_running_loop().call_later(self.chat_seconds, self.end, ws)
        elif kind == "ended":
            self.spawn(ws.close())  # the slot reconnects
        elif kind == "error":
            self.errors[frame["code"]] += 1

    def end(self, ws: ClientConnection) -> None:
        # After the measured window nothing new is sent: the drain waits for
        # what was, and an "ended" sent during it could be cut off and
        # counted lost.
        if ws in self.chatting and not self.stopped:
            self.chatting.remove(ws)
            self.sent[ws.conversation_key + b":ended"] = time.perf_counter()  # type: ignore[attr-defined]
            self.spawn(self.send(ws, '{"type":"end"}'))

    async def send(self, ws: ClientConnection, text: str) -> None:
        try:
            await ws.send(text)
        except WebSocketException as exc:
            self.errors[f"send: {type(exc).__name__}"] += 1

    async def start(self, n: int) -> None:
        try:
            ws = self.idle.get_nowait()
        except asyncio.QueueEmpty:
            self.skipped["starts (no idle visitor)"] += 1
            return
        email = self.rng.choice(KNOWN) if n % 2 else f"v-{uuid.uuid4().hex[:12]}@example.org"
        self.starts += 1
        self.start_sent[id(ws)] = time.perf_counter()
        await self.send(ws, json.dumps({"type": "start", "email": email}))

    async def message(self, n: int) -> None:
        if not self.chatting:
            self.skipped["messages (no open chat)"] += 1
            return
        ws = self.rng.choice(self.chatting)
        text = f"m{uuid.uuid4().hex[:16]}"  # unique: the console frame's key
        self.messages += 1
        self.ack_due[text] = self.sent[text.encode()] = time.perf_counter()
        await self.send(ws, json.dumps({"type": "message", "text": text, "client_msg_id": text}))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()


async def paced(rate: float, seconds: float, tick) -> None:
    t0, n = time.perf_counter(), 0
    while rate > 0 and n / rate < seconds:
        if (delay := t0 + n / rate - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        await tick(n)
        n += 1


async def run(workers: int, scale: float, args: argparse.Namespace) -> dict:
    env = dict(ONE_ADDRESS)
    starts, messages = args.starts_per_second * scale, args.messages_per_second * scale
    cluster = Cluster(workers=workers, fresh_database=True, env=env)
    await asyncio.to_thread(cluster.start)
    pool = visitors = None
    try:
        pids = [w.pid for w in cluster.workers if w.pid]
        cookie = await asyncio.to_thread(login, cluster.url)
        rss0 = [rss_mb(pid) for pid in pids]
        socks0 = [sockets(pid) for pid in pids]
        pool = ConsolePool(args.client_processes, "cpweb", watch=True)
        urls = [f"{cluster.ws_url}/ws/console/"] * args.consoles
        headers = {"Cookie": cookie, "Origin": cluster.url}
        await asyncio.to_thread(pool.connect, urls, headers)
        chat_seconds = args.visitors / (2 * starts)
        visitors = Visitors(cluster.ws_url, cluster.url, args.visitors, chat_seconds)
        await visitors.open()
        await asyncio.sleep(1)
        rss1 = [rss_mb(pid) for pid in pids]
        socks1 = [sockets(pid) for pid in pids]
        opened = sum(socks1) - sum(socks0)
        rates = [(starts, visitors.start), (messages, visitors.message)]
        warm_up = chat_seconds + 3 if args.warm_up is None else args.warm_up
        await asyncio.gather(*(paced(r, warm_up, tick) for r, tick in rates))
        await asyncio.to_thread(pool.begin)
        visitors.reset()
        cpu0 = [cpu_seconds(pid) for pid in pids]
        all0, gen0, t0 = cpu_seconds(), time.process_time(), time.perf_counter()
        await asyncio.gather(*(paced(r, args.duration, tick) for r, tick in rates))
        window = time.perf_counter() - t0
        cpu = [cpu_seconds(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
        gen, busy = time.process_time() - gen0, cpu_seconds() - all0
        visitors.stopped = True
        # Drained: every ack in, as many frames as expected, and none for 0.5 s
        # (frames received include some of events from before the window).
        deadline, quiet, last = time.perf_counter() + args.drain, 0, -1
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
            messages_sent = sum(1 for k in visitors.sent if k.startswith(b"m"))
            lifecycle = len(visitors.sent) - messages_sent
            expected = lifecycle * args.consoles + messages_sent
            received = await asyncio.to_thread(pool.received)
            quiet, last = (quiet + 1 if received == last else 0), received
            if not visitors.ack_due and received >= expected and quiet >= 5:
                break
        result = await asyncio.to_thread(pool.end, visitors.sent)
        messages_sent = sum(1 for k in visitors.sent if k.startswith(b"m"))
        expected = (len(visitors.sent) - messages_sent) * args.consoles + messages_sent
        kinds = result.by_kind
        lifecycle_frames = sum(len(kinds.get(k, ())) for k in ("started", "identified", "ended"))
        sent_by_kind = Counter(kind_of(key) for key in visitors.sent)
        lost_by_kind = {
            kind: n * (1 if kind == "message" else args.consoles) - len(kinds.get(kind, ()))
            for kind, n in sent_by_kind.items()
        }
        others = busy - sum(cpu) - gen - result.cpu
        outcome = {
            "workers": workers, "scale": scale, "starts/s": starts, "messages/s": messages,
            "starts": visitors.starts, "started": len(visitors.started),
            "messages": visitors.messages, "acks": len(visitors.acks),
            "lost": expected - result.matched, "expected": expected,
            "lost by event": {k: n for k, n in lost_by_kind.items() if n},
            "errors": dict(visitors.errors), "skipped": dict(visitors.skipped),
            "identified": kinds.get("identified", []), "message": kinds.get("message", []),
            "started_lat": visitors.started, "ack_lat": visitors.acks,
            "lifecycle frames/s": lifecycle_frames / args.duration,
            "worker CPU %": [100 * c / window for c in cpu],
            "generator CPU %": 100 * (gen + result.cpu) / window,
            "others CPU %": 100 * others / window,
            "sockets": opened, "KiB/socket": 1024 * (sum(rss1) - sum(rss0)) / max(1, opened),
            "rss": list(zip(rss0, rss1, strict=True)),
            "sockets per worker": [b - a for a, b in zip(socks0, socks1, strict=True)],
        }  # fmt: skip
        outcome["holds"] = (
            outcome["lost"] == 0 and not outcome["errors"] and not outcome["skipped"]
            and outcome["started"] == outcome["starts"] and outcome["acks"] == outcome["messages"]
            and pct(outcome["identified"], 0.99) < 1000 * HOLD_P99
        )  # fmt: skip
        return outcome
    finally:
        if visitors is not None:
            await visitors.close()
        if pool is not None:
            pool.close()
        await asyncio.to_thread(cluster.stop)


def show(o: dict) -> None:
    print(
        f"{o['workers']} worker(s) at {o['starts/s']:g} starts/s, "
        f"{o['messages/s']:g} messages/s: {'HOLDS' if o['holds'] else 'does not hold'}"
    )
    print(
        f"  start → identified on every console  p50 {pct(o['identified'], 0.5):7.1f} ms  "
        f"p99 {pct(o['identified'], 0.99):7.1f} ms"
    )
    print(
        f"  message → watching console           p50 {pct(o['message'], 0.5):7.1f} ms  "
        f"p99 {pct(o['message'], 0.99):7.1f} ms"
    )
    print(
        f"  start → started (visitor)            p50 {pct(o['started_lat'], 0.5):7.1f} ms  "
        f"p99 {pct(o['started_lat'], 0.99):7.1f} ms"
    )
    print(
        f"  message → ack (visitor)              p50 {pct(o['ack_lat'], 0.5):7.1f} ms  "
        f"p99 {pct(o['ack_lat'], 0.99):7.1f} ms"
    )
    print(
        f"  {o['starts']} starts, {o['started']} started; {o['messages']} messages, "
        f"{o['acks']} acked; console frames lost {o['lost']} of {o['expected']}; "
        f"lifecycle frames/s {o['lifecycle frames/s']:.0f}"
    )
    if o["lost by event"]:
        print(f"  lost by event: {o['lost by event']}")
    print(f"  errors {o['errors'] or 'none'}; skipped {o['skipped'] or 'none'}")
    workers = ", ".join(f"{c:.0f}%" for c in o["worker CPU %"])
    print(
        f"  CPU: workers {workers}; generator {o['generator CPU %']:.0f}%; "
        f"everything else {o['others CPU %']:.0f}% (of one core)"
    )
    rss = ", ".join(f"{a:.0f}→{b:.0f} MB" for a, b in o["rss"])
    print(
        f"  memory: {o['sockets']} sockets opened ({o['sockets per worker']} per worker), "
        f"RSS {rss}: {o['KiB/socket']:.1f} KiB per socket"
    )


async def main(args: argparse.Namespace) -> bool:
    raise_open_files(2 * (args.visitors + args.consoles) + 1000)
    print(f"contact-center load: {args.visitors} visitors, {args.consoles} consoles, "
          f"{args.starts_per_second:g} starts/s, {args.messages_per_second:g} messages/s, "
          f"{args.duration:g} s measured after a warm-up of "
          f"{'one chat + 3 s' if args.warm_up is None else f'{args.warm_up:g} s'}; "
          f"daphne workers behind nginx, Redis, PostgreSQL; load average "
          f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)  # fmt: skip
    held: dict[int, dict] = {}
    full: dict[int, dict] = {}
    for workers in args.workers:
        scale = 1.0
        for _ in range(1 + args.halvings):
            outcome = await run(workers, scale, args)
            show(outcome)
            full.setdefault(workers, outcome)
            if outcome["holds"]:
                held[workers] = outcome
                break
            scale /= 2
    if len(full) >= 2:
        one, two = full[min(full)], full[max(full)]
        n1, n2 = min(full), max(full)

        def ratio(key: str, q: float) -> float:
            base = pct(two[key], q)  # nan when empty
            return pct(one[key], q) / base if base else math.inf

        print(f"\nsame load, {n1} worker(s) / {n2} workers: start → identified p50 "
              f"{ratio('identified', 0.5):.2f}x, p99 {ratio('identified', 0.99):.2f}x; "
              f"message → console p50 {ratio('message', 0.5):.2f}x, "
              f"p99 {ratio('message', 0.99):.2f}x")  # fmt: skip
        if n1 in held and n2 in held:
            rate1, rate2 = held[n1]["starts/s"], held[n2]["starts/s"]
            print(
                f"highest load held (halving): {n1} worker(s) {rate1:g} starts/s, "
                f"{n2} workers {rate2:g} starts/s: {rate2 / rate1:.2f}x"
            )
    top = max(full)
    ok = full[top]["holds"]
    print(f"{'PASS' if ok else 'FAIL'} {top} workers hold the load given (zero loss, p99 < 1 s)")
    return ok


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=2000)
    parser.add_argument("--consoles", type=int, default=200)
    parser.add_argument("--starts-per-second", type=float, default=50)
    parser.add_argument("--messages-per-second", type=float, default=300)
    parser.add_argument("--duration", type=float, default=20, help="seconds measured")
    parser.add_argument(
        "--warm-up", type=float, default=None, help="seconds; default: one chat's length + 3"
    )
    parser.add_argument("--drain", type=float, default=5)
    parser.add_argument("--workers", type=lambda t: [int(n) for n in t.split(",")], default=[1, 2])
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--halvings", type=int, default=2, help="rate halvings, at most")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the load is not held")
    arguments = parser.parse_args()
    if not os.environ.get("REDIS_URL") or "postgres" not in os.environ.get("DATABASE_URL", ""):
        sys.exit("contact_center.py needs DATABASE_URL (PostgreSQL) and REDIS_URL")
    sys.exit(1 if not asyncio.run(main(arguments)) and arguments.strict else 0)
