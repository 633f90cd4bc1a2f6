"""Webhook tests: signed requests through Django's test client, Sinch's REST API
as a real local HTTP server (tests/fake_sinch.py), pushes captured as the
console frames chat.events publishes."""

import json
import time
import uuid
from datetime import UTC, datetime

import pytest

from chat import background, events
from chat.webhooks.signatures import conversation_signature, voice_signature
from tests.fake_sinch import start_fake_sinch

CONVERSATION_SECRET = "conversation-webhook-secret"
VOICE_KEY = "11111111-2222-4333-8444-555555555555"
VOICE_SECRET = "c2VjcmV0LW9mLXRoZS12b2ljZS1hcHA="  # base64, as Sinch shows it
EMAIL_TOKEN = "inbound-email-token"


@pytest.fixture(scope="session")
def sinch_server():
    fake, server = start_fake_sinch()
    yield fake
    server.shutdown()


@pytest.fixture
def fake_sinch(sinch_server, settings):
    """Sinch's REST API, with cpweb's settings pointing at it and its state fresh."""
    sinch_server.reset()
    for name, value in sinch_server.settings_env().items():
        setattr(settings, name, value)
    settings.SINCH_CONVERSATION_WEBHOOK_SECRET = CONVERSATION_SECRET
    settings.SINCH_VOICE_APP_KEY = VOICE_KEY
    settings.SINCH_VOICE_APP_SECRET = VOICE_SECRET
    settings.EMAIL_INBOUND_TOKEN = EMAIL_TOKEN
    yield sinch_server
    assert background.wait_idle(15), "background jobs still running after the test"


@pytest.fixture
def pushed(monkeypatch):
    """The console frames chat.events publishes (from any thread), decoded, in order."""
    frames: list[dict] = []
    monkeypatch.setattr(events, "_send", lambda event: frames.append(json.loads(event["console"])))
    return frames


def lifecycle(frames: list[dict], event: str | None = None) -> list[dict]:
    return [
        f for f in frames if f["type"] == "conversation" and (event is None or f["event"] == event)
    ]


def sinch_headers(
    body: bytes,
    *,
    secret: str = CONVERSATION_SECRET,
    nonce: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    nonce = nonce or uuid.uuid4().hex
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "HTTP_X_SINCH_WEBHOOK_SIGNATURE": conversation_signature(secret, body, nonce, stamp),
        "HTTP_X_SINCH_WEBHOOK_SIGNATURE_NONCE": nonce,
        "HTTP_X_SINCH_WEBHOOK_SIGNATURE_TIMESTAMP": stamp,
        "HTTP_X_SINCH_WEBHOOK_SIGNATURE_ALGORITHM": "HmacSHA256",
    }


def voice_headers(
    body: bytes,
    *,
    content_type: str = "application/json; charset=utf-8",
    path: str = "/webhooks/sinch/voice/",
    key: str = VOICE_KEY,
    secret: str = VOICE_SECRET,
    timestamp: str | None = None,
) -> dict[str, str]:
    stamp = timestamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = voice_signature(
        app_secret=secret,
        method="POST",
        body=body,
        content_type=content_type,
        timestamp=stamp,
        path=path,
    )
    return {"HTTP_AUTHORIZATION": f"Application {key}:{signature}", "HTTP_X_TIMESTAMP": stamp}


def inbound_message(
    *,
    channel: str = "WHATSAPP",
    identity: str = "46701234567",
    contact_id: str = "01HZC0NTACTEXAMP1E00000001",
    message_id: str | None = None,
    text: str = "Hi, I need help with my order",
    app_id: str = "01HZAPPEXAMP1E000000000001",
) -> dict:
    """A MESSAGE_INBOUND callback shaped like ../shared/examples/sinch/."""
    return {
        "app_id": app_id,
        "accepted_time": "2024-05-02T10:15:31.204518Z",
        "event_time": "2024-05-02T10:15:30Z",
        "project_id": "5b7c830f-0000-4000-8000-000000000001",
        "message": {
            "id": message_id or uuid.uuid4().hex.upper()[:26],
            "direction": "TO_APP",
            "contact_message": {"text_message": {"text": text}},
            "channel_identity": {"channel": channel, "identity": identity, "app_id": app_id},
            "conversation_id": f"CONV-{contact_id}",
            "contact_id": contact_id,
            "metadata": "",
            "accept_time": "2024-05-02T10:15:31.190211Z",
            "sender_id": "",
            "processing_mode": "CONVERSATION",
            "injected": False,
        },
        "message_metadata": "",
        "correlation_id": "",
    }
