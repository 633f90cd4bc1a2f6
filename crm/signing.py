"""The CRM webhook signature: what cpweb sends and what a CRM checks.

``X-Cpweb-Signature: sha256=<hex>`` where ``<hex>`` is
``HMAC-SHA256(CRM_WEBHOOK_SECRET, "<X-Cpweb-Timestamp>." + raw_body)``. The
timestamp (Unix seconds) is signed with the body, so a CRM that refuses old
timestamps also refuses replays of captured requests.
"""

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Cpweb-Signature"
TIMESTAMP_HEADER = "X-Cpweb-Timestamp"
EVENT_ID_HEADER = "X-Cpweb-Event-Id"
EVENT_HEADER = "X-Cpweb-Event"
ATTEMPT_HEADER = "X-Cpweb-Delivery-Attempt"
PREFIX = "sha256="


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Cpweb-Signature`` value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode() + b"." + body
    return PREFIX + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_valid(
    *,
    secret: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    tolerance: int = 300,
    now: float | None = None,
) -> bool:
    """What a receiving CRM does: constant-time compare, timestamps within ``tolerance`` s."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        return False
    expected = signature(secret=secret, timestamp=sent_at, body=body)
    return hmac.compare_digest(expected, signature_header.strip())
