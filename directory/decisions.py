"""Every identification decision, logged and counted, so an admin can answer
"why did this caller show as X?".

One log record per decision on the ``cpweb.identification`` logger: the
message is a JSON object (and, with ``CP_LOG_FORMAT=json``, the line's own
keys), for example::

    {"event": "identification", "trigger": "start", "conversation_id": "6f1c…",
     "channel": "voice", "kind": "phone", "identifier_hash": "3f9a…", "status":
     "ambiguous", "rule": "shared_identifier", "name_source": "identifier",
     "verified": false, "contact_id": null, "candidate_ids": [12, 15],
     "candidates_total": 2, "possible_match_id": null}

The identifier itself is never written: ``identifier_hash`` is a keyed hash
(HMAC-SHA256 under ``CP_LOG_HASH_KEY``) of its normalised form. To find a
caller's decisions, hash what they called from with
``manage.py identifier_hash --channel voice "070-123 45 67"`` and search the
log for it. Neither names nor the ``reason`` text (which quotes the
identifier) are logged; the contact ids lead to the directory.
"""

import json
import logging
import time
from functools import partial
from typing import TypedDict

from django.conf import settings
from django.db import transaction
from django.utils.crypto import salted_hmac

from cpweb import metrics
from directory.identify import Identity, identify
from directory.normalize import Kind

log = logging.getLogger("cpweb.identification")

_HASH_SALT = "cpweb.identification-log"


class DecisionRecord(TypedDict):
    event: str
    trigger: str  # start | reidentify | platform_name | crm | api
    conversation_id: str | None
    channel: str
    kind: str
    identifier_hash: str | None  # None for a withheld caller id
    status: str
    rule: str
    name_source: str
    verified: bool
    contact_id: int | None
    candidate_ids: list[int]
    candidates_total: int
    possible_match_id: int | None


def identifier_hash(*, kind: str, value: str | None, channel: str = "") -> str | None:
    """The keyed hash standing for a normalised identifier in the logs.

    Emails and phone numbers hash alike on every channel (one customer's
    calls and WhatsApp messages share it); a chat id includes its channel.
    """
    if not value:
        return None
    key = f"{kind}:{channel}:{value}" if kind == Kind.CHAT_ID.value else f"{kind}:{value}"
    secret = settings.CP_LOG_HASH_KEY or settings.SECRET_KEY
    return salted_hmac(_HASH_SALT, key, secret=secret, algorithm="sha256").hexdigest()[:32]


def identify_timed(
    *, channel: str, identifier: str, name: str | None = None, verified: bool = False
) -> Identity:
    """``identify()``, its time recorded in ``cpweb_identify_seconds``."""
    started = time.perf_counter()
    identity = identify(channel=channel, identifier=identifier, name=name, verified=verified)
    metrics.IDENTIFY_SECONDS.labels(identity["identifier"]["channel"]).observe(
        time.perf_counter() - started
    )
    return identity


def decision_record(
    identity: Identity, *, trigger: str, conversation_id: str | None = None
) -> DecisionRecord:
    info = identity["identifier"]
    contact = identity.get("contact")
    possible = identity.get("possible_match")
    return {
        "event": "identification",
        "trigger": trigger,
        "conversation_id": conversation_id,
        "channel": info["channel"],
        "kind": info["kind"],
        "identifier_hash": identifier_hash(
            kind=info["kind"], value=info["value"], channel=info["channel"]
        ),
        "status": identity["status"],
        "rule": identity.get("rule", "unknown"),
        "name_source": identity["name_source"],
        "verified": identity["verified"],
        "contact_id": contact["id"] if contact else None,
        "candidate_ids": [candidate["id"] for candidate in identity.get("candidates", [])],
        "candidates_total": identity.get("candidates_total", 0),
        "possible_match_id": possible["id"] if possible else None,
    }


def decision_recorded(
    identity: Identity, *, trigger: str, conversation_id: str | None = None
) -> DecisionRecord:
    """Log one identification decision and count it in ``cpweb_identifications_total``."""
    record = decision_record(identity, trigger=trigger, conversation_id=conversation_id)
    log.info(json.dumps(record, sort_keys=True), extra={"identification": record})
    metrics.IDENTIFICATIONS.labels(record["channel"], record["status"], trigger).inc()
    return record


def decision_on_commit(identity: Identity, *, trigger: str, conversation_id: str) -> None:
    """Record a decision once it took effect (never one that was rolled back)."""
    transaction.on_commit(
        partial(decision_recorded, identity, trigger=trigger, conversation_id=conversation_id)
    )
