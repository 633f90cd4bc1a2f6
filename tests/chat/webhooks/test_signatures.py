"""Sinch's callback signatures, checked on the raw body (SPEC §5)."""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chat.webhooks.signatures import (
    SignatureError,
    conversation_signature,
    verify_conversation_callback,
    verify_voice_callback,
    voice_signature,
)

# Copies of ../shared/examples/sinch (Sinch's published vector among them).
EXAMPLES = Path(__file__).resolve().parent / "sinch_examples"
VECTOR = json.loads((EXAMPLES / "conversation_signature_vector.json").read_text())


def _vector_headers(**overrides: str) -> dict[str, str]:
    headers = {
        "x-sinch-webhook-signature": VECTOR["signature"],
        "x-sinch-webhook-signature-nonce": VECTOR["nonce"],
        "x-sinch-webhook-signature-timestamp": VECTOR["timestamp"],
        "x-sinch-webhook-signature-algorithm": VECTOR["algorithm"],
    }
    return headers | overrides


def _verify(body: bytes, headers: dict[str, str], *, secret: str = VECTOR["secret"], now=None):
    return verify_conversation_callback(
        secret=secret,
        body=body,
        headers=headers,
        now=int(VECTOR["timestamp"]) if now is None else now,
        max_age=300,
    )


RAW = VECTOR["raw_body"].encode()


def test_sinchs_published_vector_verifies():
    signature = conversation_signature(VECTOR["secret"], RAW, VECTOR["nonce"], VECTOR["timestamp"])
    assert signature == "6bpJoRmFoXVjfJIVglMoJzYXxnoxRujzR4k2GOXewOE="
    assert _verify(RAW, _vector_headers()) == VECTOR["nonce"]


def test_the_raw_body_is_what_is_signed_not_a_reserialisation():
    reserialised = json.dumps(json.loads(RAW)).encode()  # same JSON, other spacing
    assert reserialised != RAW
    with pytest.raises(SignatureError) as refused:
        _verify(reserialised, _vector_headers())
    assert refused.value.code == "invalid_signature"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"secret": "foo_secret1235"}, "invalid_signature"),
        ({"body": RAW.replace(b"New Test Contact", b"Evil Test Contact")}, "invalid_signature"),
        ({"headers": {"x-sinch-webhook-signature-nonce": "01FJA8B4A7BM43YGWSG9GBV068"}},
         "invalid_signature"),
        ({"headers": {"x-sinch-webhook-signature-timestamp": "1634579354"}}, "invalid_signature"),
        ({"headers": {"x-sinch-webhook-signature": ""}}, "missing_signature"),
        ({"headers": {"x-sinch-webhook-signature-algorithm": "HmacSHA1"}},
         "unsupported_algorithm"),
        ({"now": 1634579353 + 301}, "stale_timestamp"),
        ({"now": 1634579353 - 301}, "stale_timestamp"),
    ],
)  # fmt: skip
def test_forged_or_stale_conversation_callbacks_are_refused(change, code):
    with pytest.raises(SignatureError) as refused:
        _verify(
            change.get("body", RAW),
            _vector_headers(**change.get("headers", {})),
            secret=change.get("secret", VECTOR["secret"]),
            now=change.get("now"),
        )
    assert refused.value.code == code


def test_a_callback_within_the_window_is_fresh():
    assert _verify(RAW, _vector_headers(), now=int(VECTOR["timestamp"]) + 299)


# --- Voice ----------------------------------------------------------------------

APP_KEY = "11111111-2222-4333-8444-555555555555"
APP_SECRET = base64.b64encode(b"the voice application secret").decode()
BODY = (EXAMPLES / "voice_ice.json").read_bytes()
NOW = datetime(2024, 5, 2, 10, 20, 1, tzinfo=UTC)
STAMP = "2024-05-02T10:20:00Z"
CONTENT_TYPE = "application/json; charset=utf-8"
PATH = "/webhooks/sinch/voice/"


def _by_hand() -> str:
    """The signature spelled out from Sinch's description, independently of the code."""
    md5 = base64.b64encode(hashlib.md5(BODY).digest()).decode()  # noqa: S324
    to_sign = f"POST\n{md5}\n{CONTENT_TYPE}\nx-timestamp:{STAMP}\n{PATH}"
    key = base64.b64decode(APP_SECRET)
    return base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()


def _voice(headers: dict[str, str], body: bytes = BODY, now: datetime = NOW) -> None:
    verify_voice_callback(
        app_key=APP_KEY,
        app_secret=APP_SECRET,
        method="POST",
        body=body,
        headers=headers,
        path=PATH,
        now=now,
        max_age=300,
    )


def _voice_headers(signature: str | None = None, key: str = APP_KEY) -> dict[str, str]:
    return {
        "authorization": f"Application {key}:{signature or _by_hand()}",
        "x-timestamp": STAMP,
        "content-type": CONTENT_TYPE,
    }


def test_voice_signature_follows_sinchs_signed_request_scheme():
    computed = voice_signature(
        app_secret=APP_SECRET,
        method="POST",
        body=BODY,
        content_type=CONTENT_TYPE,
        timestamp=STAMP,
        path=PATH,
    )
    assert computed == _by_hand()
    _voice(_voice_headers())


@pytest.mark.parametrize(
    ("headers", "body", "now", "code"),
    [
        (_voice_headers(key="another-app"), BODY, NOW, "invalid_signature"),
        (_voice_headers(signature="AAAA"), BODY, NOW, "invalid_signature"),
        (_voice_headers(), BODY.replace(b"46701234567", b"46709999999"), NOW, "invalid_signature"),
        ({"x-timestamp": STAMP, "content-type": CONTENT_TYPE}, BODY, NOW, "missing_signature"),
        ({**_voice_headers(), "authorization": f"Basic {APP_KEY}:x"}, BODY, NOW,
         "missing_signature"),
        (_voice_headers(), BODY, NOW + timedelta(minutes=6), "stale_timestamp"),
    ],
)  # fmt: skip
def test_wrong_missing_or_stale_voice_signatures_are_refused(headers, body, now, code):
    with pytest.raises(SignatureError) as refused:
        _voice(headers, body, now)
    assert refused.value.code == code
