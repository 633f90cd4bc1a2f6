"""Webhooks delivered by the worker to a real HTTP server standing in for the CRM."""

import threading
import time
from collections import Counter, defaultdict

import pytest
from django.db import close_old_connections, connection

from chat.models import Conversation
from chat.services import conversation_start, conversations_reidentify
from crm.models import CrmDelivery
from crm.worker import Worker

pytestmark = pytest.mark.django_db(transaction=True)


def _start(identifier: str) -> Conversation:
    conversation, _ = conversation_start(channel="webchat", identifier=identifier)
    return conversation


class RunningWorker:
    """A long-running worker in a thread, as daphne runs it."""

    def __init__(self) -> None:
        self.worker = Worker()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        finally:
            close_old_connections()

    def stop(self) -> None:
        self.worker.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def running_worker():
    workers: list[RunningWorker] = []

    def start() -> RunningWorker:
        workers.append(RunningWorker())
        return workers[-1]

    yield start
    for worker in workers:
        if worker.thread.is_alive():
            worker.stop()


def _assert_once_and_in_order(crm, rows: list[CrmDelivery]) -> None:
    acknowledged = crm.acknowledged()
    assert Counter(r.event_id for r in acknowledged) == Counter(str(row.event_id) for row in rows)
    sent_order: dict[str, list[str]] = defaultdict(list)
    for received in acknowledged:
        sent_order[received.body["conversation"]["id"]].append(received.event_id)
    written_order: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        written_order[str(row.conversation_id)].append(str(row.event_id))
    assert sent_order == written_order


def test_a_webhook_is_signed_and_the_crms_answer_becomes_the_identity(crm_mode, crm, pushed):
    conversation, _ = conversation_start(channel="SMS", identifier="+46701234567")
    crm.answers[str(conversation.pk)] = {
        "display_name": "  Anna   Svensson (CRM) ",
        "record_url": "https://crm.example/contacts/42",
    }
    Worker().run(once=True)

    [received] = crm.received
    row = CrmDelivery.objects.get()
    assert received.signature_ok
    assert (received.event_id, received.event, received.attempt) == (
        str(row.event_id), "identified", 1
    )  # fmt: skip
    assert received.body["crm"] == {"kind": "phone", "value": "+46701234567"}
    assert received.body["conversation"]["id"] == str(conversation.pk)
    assert row.state == CrmDelivery.State.DELIVERED
    assert row.last_status == 200

    conversation.refresh_from_db()
    assert conversation.identity["display_name"] == "Anna Svensson (CRM)"
    assert conversation.identity["name_source"] == "crm"
    assert conversation.identity["crm"]["record_url"] == "https://crm.example/contacts/42"
    updated = [f for f in pushed if f["event"] == "updated"]
    assert updated[-1]["conversation"]["identity"]["name_source"] == "crm"
    assert CrmDelivery.objects.count() == 1  # the answer is not sent back


@pytest.mark.parametrize(
    "answer",
    [
        {"display_name": "", "record_url": ""},
        {"record_url": "javascript:alert(1)"},
        {"unrelated": True},
    ],
)
def test_an_answer_without_a_usable_name_or_link_leaves_the_identity(crm_mode, crm, answer):
    conversation = _start("anna@example.com")
    before = dict(conversation.identity)
    crm.answers[str(conversation.pk)] = answer
    Worker().run(once=True)
    conversation.refresh_from_db()
    assert conversation.identity == before
    assert CrmDelivery.objects.get().state == CrmDelivery.State.DELIVERED


def test_503s_and_a_stalled_answer_are_retried_with_the_same_event_id(crm_mode, crm):
    crm.fail(2, status=503)
    crm.stall(1, seconds=1.5)  # past CRM_WEBHOOK_TIMEOUT (0.5 s)
    _start("anna@example.com")
    worker = Worker()
    deadline = time.monotonic() + 10
    while CrmDelivery.objects.filter(state="pending").exists():
        assert time.monotonic() < deadline
        worker.run(once=True)
        time.sleep(0.05)

    row = CrmDelivery.objects.get()
    assert [(r.status, r.attempt) for r in crm.received] == [(503, 1), (503, 2), (0, 3), (200, 4)]
    assert {r.event_id for r in crm.received} == {str(row.event_id)}
    assert (row.state, row.attempts) == (CrmDelivery.State.DELIVERED, 4)


def test_the_crm_down_for_a_while_then_back_gets_everything_once_in_order(
    crm_mode, crm, make_contact, running_worker
):
    crm.stop()  # connection refused
    conversations = [_start(f"customer{i}@example.com") for i in range(4)]
    make_contact("Customer Zero", emails=["customer0@example.com"])
    make_contact("Customer One", emails=["customer1@example.com"])
    conversations_reidentify(identifiers={"customer0@example.com", "customer1@example.com"})
    rows = list(CrmDelivery.objects.order_by("id"))
    assert len(rows) == 6
    # The test's own queries stay out of the worker's way from here: the
    # SQLite test database is in memory, where a second writer fails at once.
    worker = running_worker()
    time.sleep(0.6)  # several attempts fail meanwhile
    assert crm.received == []

    crm.fail(3, status=503)  # back, but not quite well yet
    crm.start()
    crm.wait_for(6)
    worker.stop()
    assert max(CrmDelivery.objects.values_list("attempts", flat=True)) > 2
    _assert_once_and_in_order(crm, rows)
    assert set(CrmDelivery.objects.values_list("state", flat=True)) == {"delivered"}
    for conversation in conversations:
        conversation.refresh_from_db()
        assert conversation.identity["name_source"] == "crm"


def test_a_worker_restarted_midway_loses_nothing_and_resends_nothing_acknowledged(
    crm_mode, crm, running_worker
):
    for i in range(5):
        _start(f"customer{i}@example.com")
    rows = list(CrmDelivery.objects.order_by("id"))
    crm.succeed(2)
    crm.stop()  # the third attempt on will fail until the CRM is back
    first = running_worker()
    crm.start()
    crm.wait_for(2)
    first.stop()
    acknowledged_before = {r.event_id for r in crm.acknowledged()}

    second = running_worker()
    crm.wait_for(5)
    second.stop()
    _assert_once_and_in_order(crm, rows)
    resent = [r for r in crm.received if r.event_id in acknowledged_before]
    assert len(resent) == len(acknowledged_before)


def test_two_workers_share_the_outbox_without_sending_anything_twice(
    crm_mode, crm, make_contact, running_worker
):
    if connection.vendor != "postgresql":
        pytest.skip("several workers need PostgreSQL (SKIP LOCKED); on SQLite run one")
    for i in range(6):
        _start(f"customer{i}@example.com")
    make_contact("Customer Zero", emails=["customer0@example.com"])
    conversations_reidentify(identifiers={"customer0@example.com"})
    rows = list(CrmDelivery.objects.order_by("id"))
    workers = [running_worker(), running_worker()]
    crm.wait_for(len(rows))
    for worker in workers:
        worker.stop()
    _assert_once_and_in_order(crm, rows)
    assert len(crm.received) == len(rows)
