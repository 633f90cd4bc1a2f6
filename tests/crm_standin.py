"""A real local HTTP server standing in for the CRM's webhook endpoint.

Started by the tests in a thread of the test process. It checks every
request's signature as a CRM would (``crm.signing.signature_valid``), records
it, and answers as the test says: 200 with ``{"display_name", "record_url"}``
by default, or a queue of failures (503s, slow answers past cpweb's timeout).
``stop()`` closes the port (cpweb then gets "connection refused") and
``start()`` opens the same port again: the CRM down for a while and back.
"""

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from crm import signing

SECRET = "crm-test-secret"


@dataclass
class Received:
    event_id: str
    event: str
    attempt: int
    body: dict[str, Any]
    signature_ok: bool
    status: int  # what the stand-in answered (0: it stalled past the client's timeout)


@dataclass
class CrmStandIn:
    port: int
    secret: str = SECRET
    received: list[Received] = field(default_factory=list)
    # conversation id -> the answer for its webhooks (default: a name made from the value)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What to do with the next requests before answering normally: ("ok", 0),
    # ("status", 503) or ("stall", seconds)
    failures: deque[tuple[str, float]] = field(default_factory=deque)
    # Pages it serves on GET (the CRM's own UI, which frames the console).
    pages: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/cpweb"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def succeed(self, count: int) -> None:
        self.failures.extend([("ok", 0.0)] * count)

    def fail(self, count: int, *, status: int = 503) -> None:
        self.failures.extend([("status", status)] * count)

    def stall(self, count: int, *, seconds: float) -> None:
        self.failures.extend([("stall", seconds)] * count)

    def acknowledged(self) -> list[Received]:
        """Requests answered 2xx, in the order they arrived."""
        with self.lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"CRM got {len(self.acknowledged())} of {count} webhooks")
            time.sleep(0.02)
        return self.acknowledged()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _handler(crm: CrmStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            page = crm.pages.get(self.path)
            data = (page or "not found").encode()
            self.send_response(200 if page else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signature_ok = signing.signature_valid(
                secret=crm.secret,
                timestamp=self.headers.get(signing.TIMESTAMP_HEADER, ""),
                body=raw,
                signature_header=self.headers.get(signing.SIGNATURE_HEADER, ""),
            )
            body = json.loads(raw)
            with crm.lock:
                failure = crm.failures.popleft() if crm.failures else None
            if failure and failure[0] == "ok":
                failure = None
            if not signature_ok:
                status, answer = 401, {"error": "bad signature"}
            elif failure and failure[0] == "status":
                status, answer = int(failure[1]), {"error": "unavailable"}
            elif failure:
                status, answer = 0, {}
            else:
                value = (body.get("crm") or {}).get("value")
                status = 200
                answer = crm.answers.get(
                    body["conversation"]["id"],
                    {"display_name": f"CRM customer {value}", "record_url": f"https://crm.example/r/{value}"},
                )  # fmt: skip
            with crm.lock:
                crm.received.append(
                    Received(
                        event_id=self.headers.get(signing.EVENT_ID_HEADER, ""),
                        event=self.headers.get(signing.EVENT_HEADER, ""),
                        attempt=int(self.headers.get(signing.ATTEMPT_HEADER, "0")),
                        body=body,
                        signature_ok=signature_ok,
                        status=status,
                    )
                )
            if failure and failure[0] == "stall":
                time.sleep(failure[1])  # cpweb times out and retries
                return
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def start_crm() -> CrmStandIn:
    crm = CrmStandIn(port=free_port())
    crm.start()
    return crm
