"""The outbox: one row per identity handed to the CRM, written with it, due in order."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from chat.models import Conversation
from chat.services import conversation_end, conversation_start, conversations_reidentify
from crm import outbox
from crm.identity import CrmAnswer
from crm.models import CrmDelivery
from crm.services import conversation_apply_crm_answer

pytestmark = pytest.mark.django_db


def _start(identifier: str = "anna@example.com") -> Conversation:
    conversation, _ = conversation_start(channel="webchat", identifier=identifier)
    return conversation


def _rows(conversation: Conversation) -> list[CrmDelivery]:
    return list(CrmDelivery.objects.filter(conversation=conversation).order_by("id"))


def test_standalone_mode_writes_no_webhook(settings):
    settings.CP_MODE = "standalone"
    settings.CRM_WEBHOOK_URL = "https://crm.example/hook"
    _start()
    assert not CrmDelivery.objects.exists()


def test_crm_mode_without_a_webhook_url_writes_none(settings):
    settings.CP_MODE = "crm"
    settings.CRM_WEBHOOK_URL = ""
    _start()
    assert not CrmDelivery.objects.exists()


def test_a_start_is_handed_over_once_with_the_crm_form_of_the_identifier(crm_mode):
    conversation, _ = conversation_start(channel="WHATSAPP", identifier="46701234567")
    [row] = _rows(conversation)
    assert row.event == "identified"
    assert row.state == CrmDelivery.State.PENDING
    assert row.payload["event_id"] == str(row.event_id)
    assert row.payload["crm"] == {"kind": "phone", "value": "+46701234567"}
    assert row.payload["conversation"]["id"] == str(conversation.pk)
    assert row.payload["conversation"]["channel"] == "WHATSAPP"
    assert row.payload["identity"] == conversation.identity


def test_the_row_is_written_in_the_identifications_transaction(crm_mode):
    with pytest.raises(RuntimeError), transaction.atomic():
        _start()
        raise RuntimeError("the request failed after identifying")
    assert not Conversation.objects.exists()
    assert not CrmDelivery.objects.exists()


def test_a_reidentification_is_handed_over_as_updated_and_an_end_is_not(crm_mode, make_contact):
    conversation = _start()
    make_contact("Anna Svensson", emails=["anna@example.com"])
    conversations_reidentify(identifiers={"anna@example.com"})
    conversation_end(conversation=conversation)
    rows = _rows(conversation)
    assert [row.event for row in rows] == ["identified", "updated"]
    assert rows[1].payload["identity"]["status"] == "matched"


def test_the_crms_own_answer_is_pushed_but_not_sent_back_to_it(
    crm_mode, pushed, django_capture_on_commit_callbacks
):
    conversation = _start()
    with django_capture_on_commit_callbacks(execute=True):
        changed = conversation_apply_crm_answer(
            conversation_id=str(conversation.pk),
            answer=CrmAnswer(display_name="Anna from CRM", record_url="https://crm.example/r/1"),
        )
    assert changed
    assert [row.event for row in _rows(conversation)] == ["identified"]
    identity = pushed[-1]["conversation"]["identity"]
    assert pushed[-1]["event"] == "updated"
    assert (identity["display_name"], identity["name_source"]) == ("Anna from CRM", "crm")
    assert identity["crm"]["record_url"] == "https://crm.example/r/1"


def test_a_directory_change_keeps_the_crms_name(crm_mode, make_contact):
    conversation = _start()
    conversation_apply_crm_answer(
        conversation_id=str(conversation.pk),
        answer=CrmAnswer(display_name="Anna from CRM", record_url="https://crm.example/r/1"),
    )
    make_contact("Anna Svensson", emails=["anna@example.com"])
    conversations_reidentify(identifiers={"anna@example.com"})
    conversation.refresh_from_db()
    assert conversation.identity["status"] == "matched"
    assert conversation.identity["contact"]["name"] == "Anna Svensson"
    assert conversation.identity["display_name"] == "Anna from CRM"
    assert conversation.identity["name_source"] == "crm"
    assert conversation.identity["crm"]["record_url"] == "https://crm.example/r/1"


# --- Claiming: order per conversation, leases, backoff -------------------------


def test_a_conversations_next_row_waits_for_the_earlier_one_others_do_not(crm_mode, make_contact):
    first = _start("anna@example.com")
    make_contact("Anna Svensson", emails=["anna@example.com"])
    conversations_reidentify(identifiers={"anna@example.com"})  # first's second row
    second = _start("bo@example.com")
    now = timezone.now() + timedelta(seconds=1)

    claim = outbox.delivery_claim(now=now)
    assert (claim.conversation_id, claim.event) == (str(first.pk), "identified")
    # first's "updated" waits behind its leased "identified"; second's row does not.
    other = outbox.delivery_claim(now=now)
    assert other.conversation_id == str(second.pk)
    assert outbox.delivery_claim(now=now) is None

    assert outbox.delivery_record_success(claim=claim, status=200, now=now)
    following = outbox.delivery_claim(now=now)
    assert (following.conversation_id, following.event) == (str(first.pk), "updated")


def test_a_failed_row_holds_its_conversation_back_until_it_is_delivered(crm_mode, make_contact):
    conversation = _start()
    make_contact("Anna Svensson", emails=["anna@example.com"])
    conversations_reidentify(identifiers={"anna@example.com"})
    now = timezone.now() + timedelta(seconds=1)
    claim = outbox.delivery_claim(now=now)
    retry_at = outbox.delivery_record_failure(claim=claim, error="HTTP 503", status=503, now=now)
    assert retry_at > now
    assert outbox.delivery_claim(now=now) is None  # neither the failed row nor the next one
    again = outbox.delivery_claim(now=retry_at)
    assert (again.id, again.attempt) == (claim.id, 2)
    assert _rows(conversation)[0].last_error == "HTTP 503"


def test_backoff_doubles_from_the_base_up_to_the_cap_with_jitter_below(settings):
    settings.CRM_RETRY_BASE_SECONDS = 2
    settings.CRM_RETRY_MAX_SECONDS = 60
    for attempt, full in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (40, 60), (1000, 60)]:
        delay = outbox.backoff_delay(attempt)
        assert 0.8 * full <= delay <= full, (attempt, delay)


def test_retry_after_from_the_crm_is_honoured_within_the_cap(crm_mode):
    crm_mode.CRM_RETRY_MAX_SECONDS = 30
    _start()
    now = timezone.now() + timedelta(seconds=1)
    claim = outbox.delivery_claim(now=now)
    retry_at = outbox.delivery_record_failure(claim=claim, error="429", retry_after=20, now=now)
    assert retry_at == now + timedelta(seconds=20)
    claim = outbox.delivery_claim(now=retry_at)
    retry_at = outbox.delivery_record_failure(claim=claim, error="429", retry_after=3600, now=now)
    assert retry_at == now + timedelta(seconds=30)


def test_a_claim_whose_worker_died_is_taken_over_after_its_lease(crm_mode):
    _start()
    now = timezone.now() + timedelta(seconds=1)
    lost = outbox.delivery_claim(now=now)
    assert outbox.delivery_claim(now=now + timedelta(seconds=1)) is None  # still leased
    later = now + timedelta(seconds=crm_mode.CRM_WEBHOOK_TIMEOUT) + outbox.LEASE_MARGIN
    taken_over = outbox.delivery_claim(now=later)
    assert (taken_over.id, taken_over.attempt) == (lost.id, 2)
    # The first worker's late answer is not recorded over the new claim.
    assert not outbox.delivery_record_success(claim=lost, status=200)
    assert outbox.delivery_record_failure(claim=lost, error="late") is None
    assert outbox.delivery_record_success(claim=taken_over, status=200)


def test_an_abandoned_row_lets_the_conversations_later_rows_go(crm_mode, make_contact):
    conversation = _start()
    make_contact("Anna Svensson", emails=["anna@example.com"])
    conversations_reidentify(identifiers={"anna@example.com"})
    first = _rows(conversation)[0]
    CrmDelivery.objects.filter(pk=first.pk).update(state=CrmDelivery.State.ABANDONED)
    claim = outbox.delivery_claim(now=timezone.now() + timedelta(seconds=1))
    assert claim.event == "updated"


def test_delivered_rows_are_pruned_after_the_keep_period(crm_mode):
    _start("a@example.com")
    _start("b@example.com")
    now = timezone.now() + timedelta(seconds=1)
    claim = outbox.delivery_claim(now=now)
    outbox.delivery_record_success(claim=claim, status=200, now=now)
    assert outbox.deliveries_prune(now=now + timedelta(days=6)) == 0
    assert outbox.deliveries_prune(now=now + timedelta(days=8)) == 1
    assert CrmDelivery.objects.get().state == CrmDelivery.State.PENDING
