"""How Sinch signs its callbacks, and how we check them (SPEC §5).

Pure functions over the raw request body: what is signed is the bytes that
arrived, never a re-serialisation of the parsed JSON. Every comparison is
constant-time.
"""

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime

CONVERSATION_ALGORITHM = "HmacSHA256"


class SignatureError(Exception):
    """A callback that is not provably Sinch's, or not fresh: refused with 401."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- Conversation API --------------------------------------------------------


def conversation_signature(secret: str, body: bytes, nonce: str, timestamp: str) -> str:
    """base64(HMAC-SHA256(secret, raw_body + "." + nonce + "." + timestamp))."""
    signed = body + b"." + nonce.encode() + b"." + timestamp.encode()
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_conversation_callback(
    *, secret: str, body: bytes, headers: Mapping[str, str], now: float, max_age: int
) -> str:
    """Check a Conversation API callback's signature and freshness; return its nonce.

    ``headers`` is case-insensitive (Django's ``request.headers``). The nonce
    still has to be checked against replays (``chat.services.webhook_nonce_record``).
    """
    signature = headers.get("x-sinch-webhook-signature", "").strip()
    nonce = headers.get("x-sinch-webhook-signature-nonce", "").strip()
    timestamp = headers.get("x-sinch-webhook-signature-timestamp", "").strip()
    algorithm = headers.get("x-sinch-webhook-signature-algorithm", "").strip()
    if not (signature and nonce and timestamp):
        raise SignatureError(
            "missing_signature",
            "Signed callbacks carry x-sinch-webhook-signature, -nonce and -timestamp.",
        )
    if algorithm and algorithm != CONVERSATION_ALGORITHM:
        raise SignatureError(
            "unsupported_algorithm", f"Only {CONVERSATION_ALGORITHM} signatures are accepted."
        )
    expected = conversation_signature(secret, body, nonce, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureError("invalid_signature", "The signature does not match the body.")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureError("invalid_timestamp", "The timestamp is not Unix seconds.") from None
    if abs(now - sent_at) > max_age:
        raise SignatureError(
            "stale_timestamp", f"The callback was signed more than {max_age} s from now."
        )
    return nonce


# --- Voice -------------------------------------------------------------------


def voice_signature(
    *, app_secret: str, method: str, body: bytes, content_type: str, timestamp: str, path: str
) -> str:
    """Sinch's signed request: base64(HMAC-SHA256(base64decode(app_secret), string_to_sign))."""
    # MD5 is what the protocol specifies for the body digest; the HMAC is the security.
    content_md5 = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324
    string_to_sign = "\n".join(
        [method.upper(), content_md5, content_type, f"x-timestamp:{timestamp}", path]
    )
    key = base64.b64decode(app_secret)
    digest = hmac.new(key, string_to_sign.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_voice_callback(
    *,
    app_key: str,
    app_secret: str,
    method: str,
    body: bytes,
    headers: Mapping[str, str],
    path: str,
    now: datetime,
    max_age: int,
) -> None:
    """Check ``Authorization: Application <key>:<signature>`` and the x-timestamp's freshness."""
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    key, _, signature = credentials.strip().partition(":")
    if scheme.lower() != "application" or not key or not signature:
        raise SignatureError(
            "missing_signature",
            "Signed callbacks carry 'Authorization: Application key:signature'.",
        )
    timestamp = headers.get("x-timestamp", "").strip()
    if not timestamp:
        raise SignatureError("missing_signature", "Signed callbacks carry an x-timestamp header.")
    expected = voice_signature(
        app_secret=app_secret,
        method=method,
        body=body,
        content_type=headers.get("content-type", ""),
        timestamp=timestamp,
        path=path,
    )
    key_ok = hmac.compare_digest(key.encode(), app_key.encode())
    signature_ok = hmac.compare_digest(expected.encode(), signature.encode())
    if not (key_ok and signature_ok):
        raise SignatureError("invalid_signature", "The signature does not match the request.")
    try:
        sent_at = datetime.fromisoformat(timestamp)
    except ValueError:
        raise SignatureError("invalid_timestamp", "x-timestamp is not ISO 8601.") from None
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    if abs((now - sent_at).total_seconds()) > max_age:
        raise SignatureError(
            "stale_timestamp", f"The callback was signed more than {max_age} s from now."
        )
