"""Every secret is compared in constant time (hmac.compare_digest): a spy
stands in for it and must see each check's expected value."""

import base64
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
from django.test import Client

from chat.webhooks.signatures import (
    SignatureError,
    conversation_signature,
    verify_conversation_callback,
    verify_voice_callback,
    voice_signature,
)
from crm.signing import signature, signature_valid
from directory.identify import webchat_identity_hash, webchat_identity_hash_valid


@pytest.fixture
def compared(monkeypatch):
    calls: list[tuple] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def _saw(calls, value) -> bool:
    value = value.encode() if isinstance(value, str) else value
    return any(value in (a if isinstance(a, bytes) else a.encode(),
                         b if isinstance(b, bytes) else b.encode()) for a, b in calls)  # fmt: skip


def test_identity_hash(compared, settings):
    settings.WEBCHAT_IDENTITY_SECRET = "host-secret"
    expected = webchat_identity_hash("anna@example.com")
    assert not webchat_identity_hash_valid("anna@example.com", "0" * 64)
    assert _saw(compared, expected)


@pytest.mark.django_db
def test_api_and_email_bearer_tokens(compared, settings):
    settings.CP_API_TOKEN, settings.EMAIL_INBOUND_TOKEN = "api-token", "email-token"
    settings.CP_METRICS_TOKEN = "metrics-token"
    Client().get("/metrics", HTTP_AUTHORIZATION="Bearer guess")
    Client().post("/api/identify", {}, content_type="application/json",
                  HTTP_AUTHORIZATION="Bearer guess")  # fmt: skip
    Client().post("/webhooks/email/", b"x", content_type="message/rfc822",
                  HTTP_AUTHORIZATION="Bearer guess")  # fmt: skip
    assert _saw(compared, "api-token")
    assert _saw(compared, "email-token")
    assert _saw(compared, "metrics-token")


def test_sinch_signatures(compared):
    body, now = b'{"a": 1}', time.time()
    headers = {"x-sinch-webhook-signature": "forged", "x-sinch-webhook-signature-nonce": "n",
               "x-sinch-webhook-signature-timestamp": str(int(now))}  # fmt: skip
    with pytest.raises(SignatureError):
        verify_conversation_callback(secret="s", body=body, headers=headers, now=now, max_age=300)
    assert _saw(compared, conversation_signature("s", body, "n", str(int(now))))

    secret = base64.b64encode(b"voice-secret").decode()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {"authorization": "Application key:forged", "x-timestamp": stamp,
               "content-type": "application/json"}  # fmt: skip
    with pytest.raises(SignatureError):
        verify_voice_callback(
            app_key="key", app_secret=secret, method="POST", body=body, headers=headers,
            path="/v", now=datetime.now(UTC), max_age=300,
        )  # fmt: skip
    expected = voice_signature(
        app_secret=secret, method="POST", body=body, content_type="application/json",
        timestamp=stamp, path="/v",
    )  # fmt: skip
    assert _saw(compared, expected)


def test_crm_signature(compared):
    now = int(time.time())
    body = json.dumps({"a": 1}).encode()
    assert not signature_valid(secret="crm", body=body, timestamp=str(now),
                               signature_header="sha256=forged")  # fmt: skip
    assert _saw(compared, signature(secret="crm", timestamp=now, body=body))
