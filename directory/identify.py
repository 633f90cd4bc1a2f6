"""Who is this customer? The identification rules of SPEC §1.

``identify()`` takes a channel and the identifier that arrived on it, and
returns the identity object of SPEC §2. It normalises the identifier, runs one
indexed query, and decides what the agent sees. Invalid input raises
``IdentifierError`` before any query.
"""

import hashlib
import hmac
from typing import NotRequired, TypedDict

from django.conf import settings

from directory.normalize import (
    CHAT_ID_CHANNELS,
    IdentifierError,
    Kind,
    names_agree,
    normalize_chat_id,
    normalize_email,
    normalize_phone,
)
from directory.selectors import ContactRow, contacts_by_identifier, contacts_by_name


class IdentifierInfo(TypedDict):
    channel: str
    kind: str
    raw: str
    value: str | None


class ContactInfo(TypedDict):
    id: int
    name: str
    company: str
    external_id: str


class CandidateInfo(TypedDict):
    id: int
    name: str
    company: str


class PossibleMatch(CandidateInfo):
    reason: str


class CrmHandoff(TypedDict):
    kind: str
    value: str | None
    # The CRM's own page for this customer, when its webhook answer named one.
    record_url: NotRequired[str]


class Identity(TypedDict):
    status: str  # matched | unmatched | ambiguous | withheld
    display_name: str
    name_source: str  # directory | platform | crm | identifier
    identifier: IdentifierInfo
    contact: ContactInfo | None
    candidates: list[CandidateInfo]
    candidates_total: int
    possible_match: PossibleMatch | None
    claimed_name: str | None
    verified: bool
    reason: str
    # Which rule decided (RULES), for logs and metrics; identities stored
    # before it existed lack it.
    rule: NotRequired[str]
    crm: NotRequired[CrmHandoff]


EMAIL_CHANNELS = frozenset({"webchat", "email"})
PHONE_CHANNELS = frozenset({"voice", "SMS", "WHATSAPP", "RCS", "VIBERBM", "MMS"})
# Conversation API channels: the platform authenticates its users and may
# supply their name (SPEC §1, §2). SMS is reached through the same API but has
# neither a name nor an authenticated sender.
PLATFORM_CHANNELS = frozenset(
    {"WHATSAPP", "RCS", "VIBERBM", "MMS", *CHAT_ID_CHANNELS} - {"SINCH_CHAT"}
)
VERIFIED_CHANNELS = PLATFORM_CHANNELS | {"SINCH_CHAT"}
CHANNELS = EMAIL_CHANNELS | PHONE_CHANNELS | CHAT_ID_CHANNELS

# What telephony networks put in the caller id when the caller hides it.
_WITHHELD_CLI = frozenset(
    {"", "anonymous", "private", "withheld", "restricted", "unknown", "unavailable", "blocked"}
)
WITHHELD_DISPLAY_NAME = "Withheld number"

# The rules of SPEC §1, as ``identity["rule"]``: the lookup's outcome, and
# "+platform_name" when a messaging platform's name is the headline.
RULE_WITHHELD = "withheld_caller_id"
RULE_SINGLE = "single_holder"
RULE_NONE = "no_holder"
RULE_SHARED = "shared_identifier"
PLATFORM_NAME_SUFFIX = "+platform_name"
RULES = frozenset(
    {RULE_WITHHELD}
    | {rule + suffix for rule in (RULE_SINGLE, RULE_NONE, RULE_SHARED)
       for suffix in ("", PLATFORM_NAME_SUFFIX)}
)  # fmt: skip


def canonical_channel(channel: str) -> str:
    """``webchat``, ``voice`` and ``email`` in lower case; Sinch channels in upper case."""
    text = channel.strip()
    canonical = text.lower() if text.lower() in EMAIL_CHANNELS | {"voice"} else text.upper()
    if canonical not in CHANNELS:
        raise IdentifierError(
            "unknown_channel",
            f"{channel!r} is not a channel cpweb identifies; use one of "
            f"{', '.join(sorted(CHANNELS))}.",
        )
    return canonical


def channel_kind(channel: str) -> Kind:
    if channel in EMAIL_CHANNELS:
        return Kind.EMAIL
    if channel in PHONE_CHANNELS:
        return Kind.PHONE
    return Kind.CHAT_ID


def is_withheld_cli(raw: str) -> bool:
    text = raw.strip().lower()
    return text in _WITHHELD_CLI or text.startswith("anonymous@")


def normalize_identifier(channel: str, raw: str) -> str:
    kind = channel_kind(channel)
    if kind is Kind.EMAIL:
        return normalize_email(raw)
    if kind is Kind.PHONE:
        # Carriers and Sinch send E.164 without the plus; read digits that way
        # first. Incoming numbers need only a plausible length.
        return normalize_phone(
            raw,
            region=settings.CP_DEFAULT_REGION,
            international_first=True,
            require_valid=False,
        )
    return normalize_chat_id(raw)


def webchat_identity_hash(email: str) -> str:
    """What the host website's backend sends as ``identity_hash`` for a normalised email."""
    secret = settings.WEBCHAT_IDENTITY_SECRET.encode()
    return hmac.new(secret, email.encode(), hashlib.sha256).hexdigest()


def webchat_identity_hash_valid(email: str, identity_hash: str) -> bool:
    if not settings.WEBCHAT_IDENTITY_SECRET:
        return False
    return hmac.compare_digest(webchat_identity_hash(email), identity_hash.strip().lower())


def crm_identifier(*, channel: str, kind: Kind, value: str | None) -> CrmHandoff:
    """The identifier in the form the CRM recognises (SPEC §1, CRM-integrated mode)."""
    if kind is Kind.CHAT_ID and value is not None:
        template = settings.CRM_CHAT_ID_FORMATS.get(channel, "{id}")
        return {"kind": kind.value, "value": template.replace("{id}", value)}
    return {"kind": kind.value, "value": value}


def _clean_name(name: str | None) -> str | None:
    if name is None:
        return None
    cleaned = " ".join(name.split())[:200]
    return cleaned or None


def _contact(row: ContactRow) -> ContactInfo:
    return {"id": row.id, "name": row.name, "company": row.company, "external_id": row.external_id}


def _candidate(row: ContactRow) -> CandidateInfo:
    return {"id": row.id, "name": row.name, "company": row.company}


def _possible(row: ContactRow, reason: str) -> PossibleMatch:
    return {"id": row.id, "name": row.name, "company": row.company, "reason": reason}


def _platform_name_check(
    platform_name: str, value: str, rows: list[ContactRow], total: int
) -> PossibleMatch | None:
    """The directory's best guess for a name a messaging platform supplied."""
    if total == 1:
        holder = rows[0]
        agreement = names_agree(platform_name, holder.name)
        if agreement:
            return _possible(holder, f"{value} belongs to {holder.name} ({agreement})")
        return _possible(
            holder, f"{value} belongs to {holder.name}, whose name differs from {platform_name!r}"
        )
    if total > 1:
        agreeing = [(row, names_agree(platform_name, row.name)) for row in rows]
        named = [(row, why) for row, why in agreeing if why]
        if len(named) == 1:
            row, why = named[0]
            return _possible(
                row, f"one of the {total} contacts holding {value} has this name ({why})"
            )
        return None
    by_name = contacts_by_name(name=platform_name, limit=2)
    if len(by_name) == 1:
        row, why = by_name[0]
        return _possible(row, f"no contact holds {value}; {row.name} has this name ({why})")
    return None


def identify(
    *, channel: str, identifier: str, name: str | None = None, verified: bool = False
) -> Identity:
    """The identity of a conversation on ``channel`` from ``identifier``.

    ``name`` is whatever name arrived with the conversation: the web chat
    visitor's typed name, an email's From display name, or the name a
    messaging platform holds for its user. ``verified`` says the caller proved
    a web chat email (``identity_hash``); other channels decide it themselves.
    """
    channel = canonical_channel(channel)
    kind = channel_kind(channel)
    name = _clean_name(name)
    platform_name = name if channel in PLATFORM_CHANNELS else None
    claimed_name = None if platform_name else name
    is_verified = verified if channel == "webchat" else channel in VERIFIED_CHANNELS

    if channel == "voice" and is_withheld_cli(identifier):
        identity: Identity = {
            "status": "withheld",
            "display_name": WITHHELD_DISPLAY_NAME,
            "name_source": "identifier",
            "identifier": {
                "channel": channel,
                "kind": kind.value,
                "raw": identifier,
                "value": None,
            },
            "contact": None,
            "candidates": [],
            "candidates_total": 0,
            "possible_match": None,
            "claimed_name": claimed_name,
            "verified": False,
            "reason": "caller id withheld: no directory lookup",
            "rule": RULE_WITHHELD,
        }
        return _with_crm(identity, channel, kind, None)

    value = normalize_identifier(channel, identifier)
    rows, total = contacts_by_identifier(
        kind=kind, value=value, channel=channel if kind is Kind.CHAT_ID else None
    )
    where = f"{channel} {kind.value.replace('_', ' ')} {value}"
    contact = _contact(rows[0]) if total == 1 else None
    if total == 1:
        status, rule, reason = "matched", RULE_SINGLE, f"{where} belongs to one contact"
    elif total == 0:
        status, rule, reason = "unmatched", RULE_NONE, f"{where} is not in the directory"
    else:
        status, rule, reason = "ambiguous", RULE_SHARED, f"{where} is shared by {total} contacts"

    if platform_name:
        display_name, name_source = platform_name, "platform"
        reason += "; the name is the platform's"
        rule += PLATFORM_NAME_SUFFIX
    elif contact:
        display_name, name_source = contact["name"], "directory"
    else:
        display_name, name_source = value, "identifier"

    identity = {
        "status": status,
        "display_name": display_name,
        "name_source": name_source,
        "identifier": {"channel": channel, "kind": kind.value, "raw": identifier, "value": value},
        "contact": contact,
        "candidates": [_candidate(row) for row in rows] if total > 1 else [],
        "candidates_total": total if total > 1 else 0,
        "possible_match": (
            _platform_name_check(platform_name, value, rows, total) if platform_name else None
        ),
        "claimed_name": claimed_name,
        "verified": is_verified,
        "reason": reason,
        "rule": rule,
    }
    return _with_crm(identity, channel, kind, value)


def _with_crm(identity: Identity, channel: str, kind: Kind, value: str | None) -> Identity:
    if settings.CP_MODE == "crm":
        identity["crm"] = crm_identifier(channel=channel, kind=kind, value=value)
    return identity
