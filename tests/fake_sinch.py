"""A real local HTTP server speaking the Sinch Conversation API's documented shapes.

Started by the tests (a thread of the test process), it serves:

- ``POST /oauth2/token``: OAuth2 client credentials, HTTP Basic with the
  access key; answers ``{"access_token", "expires_in", "scope", "token_type"}``;
- ``GET /v1/projects/{project}/contacts/{contact_id}``: the contact;
- ``POST /v1/projects/{project}/contacts:getChannelProfile``:
  ``{"profile_name": …}``;
- ``POST /v1/projects/{project}/messages:send``: ``{"message_id", "accepted_time"}``.

Every API call must carry ``Authorization: Bearer <token>`` with a token it
issued, else 401 in Sinch's error shape. Tests set contacts and profiles,
read what was sent, and can make it slow (``delay``) or fail (``fail_status``).
"""

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

PROJECT_ID = "5b7c830f-0000-4000-8000-000000000001"
KEY_ID = "test-key-id"
KEY_SECRET = "test-key-secret"

_CONTACT = re.compile(r"^/v1/projects/(?P<project>[^/]+)/contacts/(?P<contact>[^/:]+)$")
_PROFILE = re.compile(r"^/v1/projects/(?P<project>[^/]+)/contacts:getChannelProfile$")
_SEND = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")


@dataclass
class FakeSinch:
    base_url: str = ""
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: dict[tuple[str, str], str] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    delay: float = 0.0
    fail_status: int | None = None

    @property
    def auth_url(self) -> str:
        return f"{self.base_url}/oauth2/token"

    def settings_env(self) -> dict[str, str]:
        return {
            "SINCH_API_BASE_URL": self.base_url,
            "SINCH_AUTH_URL": self.auth_url,
            "SINCH_PROJECT_ID": PROJECT_ID,
            "SINCH_KEY_ID": KEY_ID,
            "SINCH_KEY_SECRET": KEY_SECRET,
        }

    def add_contact(self, contact_id: str, display_name: str, **fields: Any) -> None:
        self.contacts[contact_id] = {
            "id": contact_id,
            "channel_identities": fields.pop("channel_identities", []),
            "channel_priority": [],
            "display_name": display_name,
            "email": "",
            "external_id": "",
            "metadata": "",
            "language": "UNSPECIFIED",
            **fields,
        }

    def reset(self) -> None:
        self.contacts.clear()
        self.profiles.clear()
        self.sent.clear()
        self.calls.clear()
        self.delay, self.fail_status = 0.0, None


def _handler(fake: FakeSinch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: str, message: str) -> None:
            self._answer(status, {"error": {"code": status, "message": message, "status": code}})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorised(self) -> bool:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            return scheme.lower() == "bearer" and token in fake.tokens

        def _serve(self, method: str) -> None:
            body = self._body()
            fake.calls.append((method, self.path))
            if fake.delay:
                time.sleep(fake.delay)
            if self.path == "/oauth2/token" and method == "POST":
                return self._token(body)
            if not self._authorised():
                return self._error(401, "UNAUTHENTICATED", "Request had invalid authentication")
            if fake.fail_status:
                return self._error(fake.fail_status, "INTERNAL", "fake failure")
            if method == "GET" and (match := _CONTACT.match(self.path)):
                contact = fake.contacts.get(match["contact"])
                if contact is None:
                    return self._error(404, "NOT_FOUND", "contact not found")
                return self._answer(200, contact)
            payload = json.loads(body or b"{}")
            if method == "POST" and _PROFILE.match(self.path):
                contact_id = payload.get("recipient", {}).get("contact_id", "")
                if not payload.get("app_id") or not payload.get("channel"):
                    return self._error(400, "INVALID_ARGUMENT", "app_id and channel required")
                name = fake.profiles.get((contact_id, payload["channel"]))
                if name is None:
                    return self._error(404, "NOT_FOUND", "profile not found")
                return self._answer(200, {"profile_name": name})
            if method == "POST" and _SEND.match(self.path):
                if "app_id" not in payload or "recipient" not in payload:
                    return self._error(400, "INVALID_ARGUMENT", "app_id and recipient required")
                fake.sent.append(payload)
                return self._answer(
                    200,
                    {
                        "message_id": uuid.uuid4().hex.upper()[:26],
                        "accepted_time": "2024-05-02T10:30:00Z",
                    },
                )
            return self._error(404, "NOT_FOUND", f"no route {method} {self.path}")

        def _token(self, body: bytes) -> None:
            scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
            expected = base64.b64encode(f"{KEY_ID}:{KEY_SECRET}".encode()).decode()
            form = parse_qs(body.decode())
            if scheme.lower() != "basic" or credentials != expected:
                return self._answer(401, {"error": "invalid_client"})
            if form.get("grant_type") != ["client_credentials"]:
                return self._answer(400, {"error": "unsupported_grant_type"})
            token = uuid.uuid4().hex
            fake.tokens.add(token)
            self._answer(
                200,
                {"access_token": token, "expires_in": 3599, "scope": "", "token_type": "bearer"},
            )

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler


def start_fake_sinch() -> tuple[FakeSinch, ThreadingHTTPServer]:
    fake = FakeSinch()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return fake, server
