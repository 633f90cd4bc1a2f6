"""The CRM hand-off's writes: one webhook attempt, and the CRM's answer applied.

``delivery_attempt`` is what a worker (``crm.worker``) does in a loop: claim
the next due outbox row, POST it signed, and record the outcome — on a 2xx
in one transaction with the CRM's answer applied to the conversation.
"""

import enum
import json
import logging
import time
from dataclasses import dataclass

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chat import events
from chat.models import Conversation
from chat.selectors import with_last_messages
from crm import outbox, signing
from crm.identity import CrmAnswer, answer_parse, identity_with_answer
from directory.decisions import decision_on_commit

log = logging.getLogger(__name__)

USER_AGENT = "cpweb-crm-webhook/1"
MAX_ANSWER_BYTES = 64 * 1024


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    # Recorded by another worker that took the claim over: nothing to do.
    LOST_CLAIM = "lost_claim"


@dataclass(frozen=True)
class Attempt:
    claim: outbox.Claim
    outcome: Outcome
    status: int | None
    error: str = ""


def webhook_request(claim: outbox.Claim, *, sent_at: int | None = None) -> tuple[bytes, dict]:
    """The raw body and headers of one attempt; the signature covers this exact body."""
    body = json.dumps(claim.payload, ensure_ascii=False, separators=(",", ":")).encode()
    sent_at = int(time.time()) if sent_at is None else sent_at
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        signing.TIMESTAMP_HEADER: str(sent_at),
        signing.SIGNATURE_HEADER: signing.signature(
            secret=settings.CRM_WEBHOOK_SECRET, timestamp=sent_at, body=body
        ),
        signing.EVENT_ID_HEADER: claim.event_id,
        signing.EVENT_HEADER: claim.event,
        signing.ATTEMPT_HEADER: str(claim.attempt),
    }
    return body, headers


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the usual backoff is close enough


def delivery_attempt(*, client: httpx.Client) -> Attempt | None:
    """Deliver the next due outbox row once; None if nothing is due."""
    claim = outbox.delivery_claim()
    if claim is None:
        return None
    body, headers = webhook_request(claim)
    status: int | None = None
    retry_after: float | None = None
    try:
        # Not client.post(): the answer is read only up to MAX_ANSWER_BYTES.
        with client.stream(
            "POST",
            settings.CRM_WEBHOOK_URL,
            content=body,
            headers=headers,
            timeout=settings.CRM_WEBHOOK_TIMEOUT,
        ) as response:
            status = response.status_code
            retry_after = _retry_after(response)
            answer_body = b""
            if response.is_success:
                for chunk in response.iter_bytes():
                    answer_body += chunk
                    if len(answer_body) > MAX_ANSWER_BYTES:
                        answer_body = b""
                        break
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return _failed(claim, error=error, status=status)

    if not 200 <= status < 300:
        return _failed(claim, error=f"HTTP {status}", status=status, retry_after=retry_after)
    answer = answer_parse(answer_body)
    with transaction.atomic():
        if not outbox.delivery_record_success(claim=claim, status=status):
            return Attempt(claim, Outcome.LOST_CLAIM, status)
        if answer is not None:
            conversation_apply_crm_answer(conversation_id=claim.conversation_id, answer=answer)
    log.info("crm: %s %s delivered (HTTP %s)", claim.event, claim.event_id, status)
    return Attempt(claim, Outcome.DELIVERED, status)


def _failed(
    claim: outbox.Claim, *, error: str, status: int | None, retry_after: float | None = None
) -> Attempt:
    retry_at = outbox.delivery_record_failure(
        claim=claim, error=error, status=status, retry_after=retry_after
    )
    if retry_at is None:
        return Attempt(claim, Outcome.LOST_CLAIM, status, error)
    log.warning(
        "crm: %s %s attempt %d failed (%s); next try at %s",
        claim.event, claim.event_id, claim.attempt, error, retry_at.isoformat(),
    )  # fmt: skip
    return Attempt(claim, Outcome.RETRY, status, error)


def conversation_apply_crm_answer(*, conversation_id: str, answer: CrmAnswer) -> bool:
    """Show the CRM's name for the customer (``name_source: "crm"``) and push ``updated``.

    Returns whether the identity changed. The push is not handed to the CRM
    again: it is the CRM's own answer.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
        if conversation is None:
            return False
        identity = identity_with_answer(conversation.identity, answer)
        if identity == conversation.identity:
            return False
        conversation.identity = identity
        conversation.identity_updated_at = timezone.now()
        conversation.save(update_fields=["identity", "identity_updated_at"])
        with_last_messages([conversation])
        events.conversation_changed(conversation, "updated", crm_handoff=False)
        decision_on_commit(identity, trigger="crm", conversation_id=str(conversation.pk))
    return True
