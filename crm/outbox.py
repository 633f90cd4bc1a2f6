"""The outbox's mechanics: enqueue in the caller's transaction, claim, record.

No HTTP here (``crm.services`` posts), no pushes (``chat.events``).

Ordering: a row is due only when no earlier row of its conversation is still
pending, so a conversation's rows reach the CRM one after another, in the
order they were written; other conversations are not held up. Several
workers may run: on PostgreSQL a claim takes ``SELECT … FOR UPDATE SKIP
LOCKED`` so workers pass over each other's rows, and on both databases the
claim is a lease (``leased_until``) so a worker that dies mid-call only delays
its row, and a fencing token (``attempts``) so a late result of a taken-over
claim is dropped.
"""

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from chat.events import identity_for_mode, timestamp
from chat.models import Conversation
from crm.models import CrmDelivery
from directory.identify import CrmHandoff, Identity

log = logging.getLogger(__name__)

# How long past the HTTP timeout a claim stays with its worker.
LEASE_MARGIN = timedelta(seconds=5)


class WebhookConversation(TypedDict):
    id: str
    channel: str
    state: str
    started_at: str


class WebhookPayload(TypedDict):
    """The JSON body POSTed to CRM_WEBHOOK_URL (README, "CRM-integrated mode")."""

    event_id: str
    event: str  # identified | updated
    occurred_at: str
    conversation: WebhookConversation
    crm: CrmHandoff | None
    identity: Identity


@dataclass(frozen=True)
class Claim:
    id: int
    event_id: str
    event: str
    conversation_id: str
    attempt: int
    payload: dict[str, Any]


def handoff_enabled() -> bool:
    return settings.CP_MODE == "crm" and bool(settings.CRM_WEBHOOK_URL)


def delivery_enqueue(*, conversation: Conversation) -> CrmDelivery | None:
    """Write the webhook for the conversation's current identity, in the caller's transaction.

    The first row of a conversation is ``identified``, later ones ``updated``.
    An identity the CRM was already sent (the "started" and "identified"
    events of one start carry the same one) is not sent twice.
    """
    if not handoff_enabled():
        return None
    identity = identity_for_mode(conversation.identity)
    last = (
        CrmDelivery.objects.filter(conversation=conversation)
        .order_by("-id")
        .values_list("payload", flat=True)
        .first()
    )
    if last is not None and last.get("identity") == identity:
        return None
    delivery = CrmDelivery(conversation=conversation, event="updated" if last else "identified")
    payload: WebhookPayload = {
        "event_id": str(delivery.event_id),
        "event": delivery.event,
        "occurred_at": timestamp(delivery.created_at),
        "conversation": {
            "id": str(conversation.pk),
            "channel": conversation.channel,
            "state": conversation.state,
            "started_at": timestamp(conversation.started_at),
        },
        "crm": identity.get("crm"),
        "identity": identity,
    }
    delivery.payload = payload
    delivery.save()
    if connection.in_atomic_block:
        transaction.on_commit(_wake_workers)
    else:
        _wake_workers()
    return delivery


def _wake_workers() -> None:
    from crm.worker import wake

    wake()


def _due(now: datetime) -> QuerySet[CrmDelivery]:
    earlier_pending = CrmDelivery.objects.filter(
        conversation=OuterRef("conversation"),
        id__lt=OuterRef("id"),
        state=CrmDelivery.State.PENDING,
    )
    return (
        CrmDelivery.objects.filter(state=CrmDelivery.State.PENDING, next_attempt_at__lte=now)
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lte=now))
        .exclude(Exists(earlier_pending))
        .order_by("next_attempt_at", "id")
    )


def delivery_claim(*, now: datetime | None = None) -> Claim | None:
    """Take the next due row for one attempt, or None if nothing is due."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.CRM_WEBHOOK_TIMEOUT) + LEASE_MARGIN
    with transaction.atomic():
        due = _due(now)
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, of=("self",))
        row = due.first()
        if row is None:
            return None
        row.attempts += 1
        row.leased_until = now + lease
        row.last_attempt_at = now
        row.save(update_fields=["attempts", "leased_until", "last_attempt_at"])
    return Claim(
        id=row.pk,
        event_id=str(row.event_id),
        event=row.event,
        conversation_id=str(row.conversation_id),
        attempt=row.attempts,
        payload=row.payload,
    )


def _claimed(claim: Claim) -> QuerySet[CrmDelivery]:
    """The claimed row, if this claim still owns it (nobody took it over since)."""
    return CrmDelivery.objects.filter(
        pk=claim.id, attempts=claim.attempt, state=CrmDelivery.State.PENDING
    )


def delivery_record_success(*, claim: Claim, status: int, now: datetime | None = None) -> bool:
    """Mark the row delivered; False if the claim was taken over meanwhile.

    Call inside the transaction that also applies the CRM's answer.
    """
    now = now or timezone.now()
    return bool(
        _claimed(claim).update(
            state=CrmDelivery.State.DELIVERED,
            delivered_at=now,
            leased_until=None,
            last_status=status,
            last_error="",
        )
    )


def backoff_delay(attempt: int) -> float:
    """Seconds before the next try after ``attempt`` failed: doubling, capped, jittered."""
    base = settings.CRM_RETRY_BASE_SECONDS
    cap = settings.CRM_RETRY_MAX_SECONDS
    delay = min(cap, base * 2 ** min(attempt - 1, 32))
    # Up to 20% less, so rows that failed together do not all retry together.
    return delay * (0.8 + 0.2 * random.random())  # noqa: S311 - jitter, not a secret


def delivery_record_failure(
    *,
    claim: Claim,
    error: str,
    status: int | None = None,
    retry_after: float | None = None,
    now: datetime | None = None,
) -> datetime | None:
    """Schedule the next attempt; returns when it is (None if the claim was taken over)."""
    now = now or timezone.now()
    delay = backoff_delay(claim.attempt)
    if retry_after is not None:
        delay = min(settings.CRM_RETRY_MAX_SECONDS, max(delay, retry_after))
    next_attempt_at = now + timedelta(seconds=delay)
    updated = _claimed(claim).update(
        next_attempt_at=next_attempt_at,
        leased_until=None,
        last_status=status,
        last_error=error[:2000],
    )
    return next_attempt_at if updated else None


def delivery_release(*, claim: Claim) -> None:
    """Give a claim back untried (a worker shutting down): due again at once."""
    _claimed(claim).update(leased_until=None)


def deliveries_prune(*, now: datetime | None = None) -> int:
    """Delete delivered rows older than CRM_DELIVERED_KEEP_DAYS; returns how many."""
    now = now or timezone.now()
    horizon = now - timedelta(days=settings.CRM_DELIVERED_KEEP_DAYS)
    deleted, _ = CrmDelivery.objects.filter(
        state=CrmDelivery.State.DELIVERED, delivered_at__lt=horizon
    ).delete()
    return deleted


def outbox_depth() -> int:
    """Webhook rows waiting to be delivered (/metrics); a partial index holds exactly these."""
    return CrmDelivery.objects.filter(state=CrmDelivery.State.PENDING).count()
