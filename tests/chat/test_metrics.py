"""``GET /metrics`` and the numbers in it, moved by real traffic through the
real endpoints (websockets through the ASGI app, webhooks and the API through
Django's test client)."""

import json
import logging

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from chat.webhooks.signatures import conversation_signature
from directory.decisions import identifier_hash
from directory.services import contact_create
from tests.chat.webhooks.conftest import inbound_message, voice_headers

pytestmark = pytest.mark.django_db(transaction=True)

METRICS_TOKEN = "metrics-token-4b1d"
SINCH_SECRET = "sinch-secret-never-logged"
EMAIL_TOKEN = "email-token-never-logged"


@pytest.fixture(autouse=True)
def configured(settings):
    settings.CP_METRICS_TOKEN = METRICS_TOKEN
    settings.SINCH_CONVERSATION_WEBHOOK_SECRET = SINCH_SECRET
    settings.SINCH_VOICE_APP_KEY = "11111111-2222-4333-8444-555555555555"
    settings.SINCH_VOICE_APP_SECRET = "c2VjcmV0LW9mLXRoZS12b2ljZS1hcHA="
    settings.EMAIL_INBOUND_TOKEN = EMAIL_TOKEN
    settings.SINCH_KEY_ID = ""  # no platform-name fetches to a Sinch that is not there


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_token(client, settings):
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong["WWW-Authenticate"]) == (401, 'Bearer realm="cpweb metrics"')
    assert (
        client.post("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code
        == 405
    )
    settings.CP_METRICS_TOKEN = ""
    assert client.get("/metrics").json()["error"] == "not_configured"


async def test_a_web_chat_is_counted_timed_pushed_and_logged(connect, agent_cookie, caplog):
    await sync_to_async(contact_create)(name="Anna Svensson", emails=["anna@example.com"])
    caplog.set_level(logging.DEBUG)
    before = await sync_to_async(scrape)()
    console = await connect("/ws/console/", cookie=agent_cookie)
    assert (await console.receive())["type"] == "snapshot"
    visitor = await connect("/ws/chat/")
    await visitor.send({"type": "start", "email": "Anna@Example.com"})
    started = await visitor.receive()
    identified = await console.receive_until(lambda f: f.get("event") == "identified")
    during = await sync_to_async(scrape)()

    labels = {"channel": "webchat", "status": "matched", "trigger": "start"}
    assert value(during, "cpweb_identifications_total", **labels) == (
        value(before, "cpweb_identifications_total", **labels) + 1
    )
    assert value(during, "cpweb_identify_seconds_count", channel="webchat") == (
        value(before, "cpweb_identify_seconds_count", channel="webchat") + 1
    )
    # started + identified written to the console, commit to frame.
    pushed = value(during, "cpweb_push_seconds_count", event="conversation")
    assert pushed >= value(before, "cpweb_push_seconds_count", event="conversation") + 2
    for kind in ("visitor", "console"):
        assert value(during, "cpweb_open_sockets", kind=kind) == (
            value(before, "cpweb_open_sockets", kind=kind) + 1
        )

    # The decision in the log: this conversation, the hashed identifier, never the email.
    decisions = [r.identification for r in caplog.records if r.name == "cpweb.identification"]
    assert decisions == [
        {
            "event": "identification",
            "trigger": "start",
            "conversation_id": started["conversation_id"],
            "channel": "webchat",
            "kind": "email",
            "identifier_hash": identifier_hash(kind="email", value="anna@example.com"),
            "status": "matched",
            "rule": "single_holder",
            "name_source": "directory",
            "verified": False,
            "contact_id": identified["conversation"]["identity"]["contact"]["id"],
            "candidate_ids": [],
            "candidates_total": 0,
            "possible_match_id": None,
        }
    ]
    everything = "\n".join(r.getMessage() for r in caplog.records).lower()
    assert "anna@example.com" not in everything
    assert started["token"].lower() not in everything  # the visitor's resume token

    await visitor.communicator.disconnect()
    await console.communicator.disconnect()
    after = await sync_to_async(scrape)()
    for kind in ("visitor", "console"):
        assert value(after, "cpweb_open_sockets", kind=kind) == value(
            before, "cpweb_open_sockets", kind=kind
        )


def _sinch_post(body: bytes, secret: str = SINCH_SECRET):
    import time
    import uuid

    nonce, stamp = uuid.uuid4().hex, str(int(time.time()))
    return Client().post(
        "/webhooks/sinch/conversation/",
        data=body,
        content_type="application/json",
        HTTP_X_SINCH_WEBHOOK_SIGNATURE=conversation_signature(secret, body, nonce, stamp),
        HTTP_X_SINCH_WEBHOOK_SIGNATURE_NONCE=nonce,
        HTTP_X_SINCH_WEBHOOK_SIGNATURE_TIMESTAMP=stamp,
    )


def test_webhook_identifications_and_rejections_are_counted(caplog):
    caplog.set_level(logging.DEBUG)
    before = scrape()
    body = json.dumps(inbound_message(channel="SMS", identity="15550100999")).encode()
    assert _sinch_post(body).status_code == 200
    assert _sinch_post(body, secret="forged").status_code == 401
    ice = json.dumps({"event": "ice", "callid": "metrics-1", "cli": "anonymous"}).encode()
    assert (
        Client()
        .post("/webhooks/sinch/voice/", ice, content_type="application/json; charset=utf-8",
              **voice_headers(ice, secret="c2VjcmV0LW9mLXRoZS12b2ljZS1hcHA=",
                              key="11111111-2222-4333-8444-555555555555"))
        .status_code
    ) == 200  # fmt: skip
    for token in ("wrong", ""):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        refused = Client().post(
            "/webhooks/email/", b"From: a@b.example\r\n\r\nhi", content_type="message/rfc822",
            headers=headers,
        )  # fmt: skip
        assert refused.status_code == 401
    assert Client().get("/webhooks/email/").status_code == 405
    after = scrape()

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        moved("cpweb_identifications_total", channel="SMS", status="unmatched", trigger="start")
        == 1
    )
    assert (
        moved("cpweb_identifications_total", channel="voice", status="withheld", trigger="start")
        == 1
    )
    assert (
        moved(
            "cpweb_webhook_rejections_total",
            webhook="sinch_conversation",
            reason="invalid_signature",
        )
        == 1
    )
    assert moved("cpweb_webhook_rejections_total", webhook="email", reason="unauthorized") == 2
    assert moved("cpweb_webhook_rejections_total", webhook="email", reason="http_405") == 1
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (SINCH_SECRET, EMAIL_TOKEN, METRICS_TOKEN, "15550100999"):
        assert secret not in everything


def test_the_crm_outbox_depth_is_read_at_scrape_time(settings):
    from chat.services import conversation_start

    settings.CP_MODE = "crm"
    settings.CRM_WEBHOOK_URL = "http://127.0.0.1:9/never"
    settings.CRM_WEBHOOK_SECRET = "crm-secret"
    depth = value(scrape(), "cpweb_crm_outbox_depth")
    conversation_start(channel="webchat", identifier="someone@example.org")
    conversation_start(channel="voice", identifier="+15550100999")
    assert value(scrape(), "cpweb_crm_outbox_depth") == depth + 2
