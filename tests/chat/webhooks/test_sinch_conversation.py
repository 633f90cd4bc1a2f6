"""POST /webhooks/sinch/conversation/: Conversation API callbacks in, consoles told."""

import json
import time
from pathlib import Path

import pytest
from django.test import Client

from chat import background, services
from chat.models import (
    Conversation,
    Message,
    SinchContactName,
    SinchLink,
    SinchOutboundMessage,
    WebhookNonce,
)
from chat.webhooks.sinch_conversation import contact_message_text
from tests.chat.webhooks.conftest import inbound_message, lifecycle, sinch_headers

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/webhooks/sinch/conversation/"
EXAMPLES = Path(__file__).resolve().parent / "sinch_examples"


def _post(body: bytes | dict, **signing):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = signing.pop("headers", None) or sinch_headers(raw, **signing)
    return Client().post(URL, data=raw, content_type="application/json", **headers)


@pytest.fixture
def anna(make_contact):
    return make_contact(
        "Anna Maria Svensson", country="SE", phones=["070-123 45 67"], external_id="CRM-1001"
    )


def test_a_whatsapp_customer_is_identified_then_named_by_the_platform(anna, fake_sinch, pushed):
    fake_sinch.add_contact("01HZC0NTACTEXAMP1E00000001", "Anna Svensson")
    response = _post((EXAMPLES / "conversation_message_inbound_whatsapp.json").read_bytes())
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "accepted"}

    identified = lifecycle(pushed, "identified")[0]["conversation"]
    assert identified["channel"] == "WHATSAPP"
    assert identified["identity"]["status"] == "matched"
    assert identified["identity"]["display_name"] == "Anna Maria Svensson"
    assert identified["identity"]["identifier"]["value"] == "+46701234567"
    assert identified["identity"]["verified"] is True

    assert background.wait_idle()
    updated = lifecycle(pushed, "updated")[-1]["conversation"]["identity"]
    assert updated["display_name"] == "Anna Svensson"
    assert updated["name_source"] == "platform"
    assert updated["possible_match"]["id"] == anna.pk
    assert ("GET", f"/v1/projects/{fake_sinch.settings_env()['SINCH_PROJECT_ID']}"
            f"/contacts/01HZC0NTACTEXAMP1E00000001") in fake_sinch.calls  # fmt: skip
    message = Message.objects.get()
    assert (message.sender, message.text) == ("visitor", "Hi, I need help with my order")


def test_the_next_message_continues_the_open_conversation_with_or_without_plus(
    anna, fake_sinch, pushed
):
    assert _post(inbound_message(identity="46701234567", text="one")).status_code == 200
    assert _post(inbound_message(identity="+46701234567", text="two")).status_code == 200
    conversation = Conversation.objects.get()
    assert list(conversation.messages.values_list("text", flat=True)) == ["one", "two"]
    assert len(lifecycle(pushed, "started")) == 1


def test_a_message_sinch_delivers_twice_is_stored_once(anna, fake_sinch):
    payload = inbound_message(message_id="01HZMSGREDELIVERED00000001")
    assert _post(payload).status_code == 200
    assert _post(payload).status_code == 200  # a retry: new nonce, same message
    assert Message.objects.count() == 1


def test_a_new_conversation_starts_after_the_last_one_ended(anna, fake_sinch):
    _post(inbound_message(text="first"))
    services.conversation_end(conversation=Conversation.objects.get())
    _post(inbound_message(text="again"))
    assert Conversation.objects.filter(state="open").count() == 1
    assert Conversation.objects.count() == 2


@pytest.mark.parametrize(
    ("signing", "code"),
    [
        ({"secret": "not-the-secret"}, "invalid_signature"),
        # Offsets from the moment the request is signed: a timestamp taken when
        # the tests were collected went stale-or-not with the suite's speed.
        ({"age": 400}, "stale_timestamp"),
        ({"age": -400}, "stale_timestamp"),
        ({"headers": {"HTTP_X_SINCH_WEBHOOK_SIGNATURE_NONCE": "n"}}, "missing_signature"),
    ],
    ids=["forged", "stale", "future", "unsigned"],
)
def test_forged_stale_and_unsigned_callbacks_are_refused_and_nothing_stored(
    anna, fake_sinch, pushed, signing, code
):
    signing = dict(signing)
    if "age" in signing:
        signing["timestamp"] = int(time.time()) - signing.pop("age")
    response = _post(inbound_message(), **signing)
    assert (response.status_code, response.json()["error"]) == (401, code)
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()
    assert not SinchLink.objects.exists()
    assert not WebhookNonce.objects.exists()
    assert pushed == []
    assert background.wait_idle()
    assert fake_sinch.calls == []  # nobody was asked for a name either


def test_a_forged_contact_update_renames_nobody(anna, fake_sinch, pushed):
    _post(inbound_message(contact_id="CONTACT-FORGED"))
    assert background.wait_idle()
    pushed.clear()
    update = {
        "app_id": "",
        "project_id": "p",
        "contact_update_notification": {
            "contact": {"id": "CONTACT-FORGED", "display_name": "Mallory",
                        "channel_identities": []}
        },
    }  # fmt: skip
    assert _post(update, secret="not-the-secret").status_code == 401
    assert not SinchContactName.objects.filter(name="Mallory").exists()
    assert Conversation.objects.get().identity["display_name"] == "Anna Maria Svensson"
    assert pushed == []


def test_a_replayed_nonce_is_refused_and_nothing_more_stored(anna, fake_sinch, pushed):
    raw = json.dumps(inbound_message()).encode()
    headers = sinch_headers(raw, nonce="01FJA8B4A7BM43YGWSG9GBV0AA")
    assert _post(raw, headers=headers).status_code == 200
    replayed = _post(raw, headers=headers)
    assert replayed.status_code == 401
    assert replayed.json()["error"] == "replayed_nonce"
    # Signed afresh with the same nonce (another message): still a replay.
    other = json.dumps(inbound_message(text="second")).encode()
    assert _post(other, nonce="01FJA8B4A7BM43YGWSG9GBV0AA").status_code == 401
    assert Message.objects.count() == 1
    assert len(lifecycle(pushed, "identified")) == 1


def test_old_nonces_are_pruned(fake_sinch, settings):
    from datetime import timedelta

    from django.utils import timezone

    WebhookNonce.objects.create(
        nonce="ancient", received_at=timezone.now() - timedelta(seconds=3 * 300)
    )
    assert _post({"app_id": "", "unknown_trigger": {}}).status_code == 200
    assert not WebhookNonce.objects.filter(nonce="ancient").exists()


def test_unknown_channels_and_triggers_are_accepted_and_ignored(fake_sinch, pushed):
    assert _post(inbound_message(channel="TIKTOK", identity="abc")).json() == {"status": "ignored"}
    duplication = (EXAMPLES / "conversation_contact_identities_duplication.json").read_bytes()
    assert _post(duplication).json() == {"status": "ignored"}
    report = {"app_id": "x", "message_delivery_report": {"status": "DELIVERED"}}
    assert _post(report).json() == {"status": "ignored"}
    outbound = inbound_message()
    outbound["message"]["direction"] = "TO_CONTACT"
    assert _post(outbound).json() == {"status": "ignored"}
    assert not Conversation.objects.exists()
    assert pushed == []


def test_sinchs_published_contact_create_example_refreshes_the_cached_name(fake_sinch, settings):
    vector = json.loads((EXAMPLES / "conversation_signature_vector.json").read_text())
    settings.SINCH_CONVERSATION_WEBHOOK_SECRET = vector["secret"]
    settings.SINCH_WEBHOOK_MAX_AGE = 10**10  # the vector was signed in 2021
    headers = {
        "HTTP_X_SINCH_WEBHOOK_SIGNATURE": vector["signature"],
        "HTTP_X_SINCH_WEBHOOK_SIGNATURE_NONCE": vector["nonce"],
        "HTTP_X_SINCH_WEBHOOK_SIGNATURE_TIMESTAMP": vector["timestamp"],
        "HTTP_X_SINCH_WEBHOOK_SIGNATURE_ALGORITHM": vector["algorithm"],
    }
    response = _post(vector["raw_body"].encode(), headers=headers)
    assert response.status_code == 200, response.content
    cached = SinchContactName.objects.get(contact_id="01FJA8B466Y0R2GNXD78MD9SM1")
    assert (cached.channel, cached.name) == ("", "New Test Contact")


def test_contact_update_renames_the_open_conversation(anna, fake_sinch, pushed):
    _post(inbound_message(contact_id="CONTACT-UPD"))  # the API knows no such contact: no name
    assert background.wait_idle()
    assert Conversation.objects.get().identity["name_source"] == "directory"
    update = {
        "app_id": "",
        "project_id": "p",
        "contact_update_notification": {
            "contact": {"id": "CONTACT-UPD", "display_name": "Anna M. Svensson",
                        "channel_identities": []}
        },
    }  # fmt: skip
    assert _post(update).json() == {"status": "accepted"}
    identity = lifecycle(pushed, "updated")[-1]["conversation"]["identity"]
    assert identity["display_name"] == "Anna M. Svensson"
    assert identity["name_source"] == "platform"


def test_a_messenger_customer_is_named_from_the_channel_profile(make_contact, fake_sinch, pushed):
    amelia = make_contact("Amelia Clarke", chat_ids=[("MESSENGER", "2742085512340733")])
    fake_sinch.profiles[("01HZC0NTACTEXAMP1E00000002", "MESSENGER")] = "Amelia Clarke"
    body = (EXAMPLES / "conversation_message_inbound_messenger.json").read_bytes()
    assert _post(body).status_code == 200
    first = lifecycle(pushed, "identified")[0]["conversation"]["identity"]
    assert (first["status"], first["contact"]["id"]) == ("matched", amelia.pk)
    assert background.wait_idle()
    named = lifecycle(pushed, "updated")[-1]["conversation"]["identity"]
    assert named["display_name"] == "Amelia Clarke"
    assert named["possible_match"]["id"] == amelia.pk
    assert "Amelia Clarke" in named["possible_match"]["reason"]
    assert Message.objects.get().text == "[media] https://media.example/photo.jpg"


def test_a_cached_name_is_in_the_first_push(anna, fake_sinch, pushed):
    SinchContactName.objects.create(contact_id="CACHED", channel="", name="Anna Svensson")
    _post(inbound_message(contact_id="CACHED"))
    first = lifecycle(pushed, "identified")[0]["conversation"]["identity"]
    assert first["display_name"] == "Anna Svensson"
    assert first["name_source"] == "platform"


def test_a_slow_name_fetch_delays_neither_the_answer_nor_the_push(anna, fake_sinch, pushed):
    fake_sinch.add_contact("SLOW", "Anna Svensson")
    fake_sinch.delay = 1.5
    started = time.monotonic()
    response = _post(inbound_message(contact_id="SLOW"))
    assert response.status_code == 200
    assert time.monotonic() - started < 1.0
    assert lifecycle(pushed, "identified")  # pushed before any name arrived
    assert not lifecycle(pushed, "updated")
    assert background.wait_idle()
    assert lifecycle(pushed, "updated")[-1]["conversation"]["identity"]["display_name"] == (
        "Anna Svensson"
    )


def test_a_failing_name_fetch_leaves_the_identity_as_pushed(anna, fake_sinch, pushed):
    fake_sinch.add_contact("FAILS", "Anna Svensson")
    fake_sinch.fail_status = 500
    assert _post(inbound_message(contact_id="FAILS")).status_code == 200
    assert background.wait_idle()
    assert not lifecycle(pushed, "updated")
    assert Conversation.objects.get().identity["display_name"] == "Anna Maria Svensson"


def test_sms_has_no_platform_name_and_shared_numbers_are_ambiguous(
    make_contact, fake_sinch, pushed
):
    make_contact("Erik Lindqvist", country="SE", phones=["08-123 456 78"])
    make_contact("Karin Lindqvist", country="SE", phones=["+46 8 123 456 78"])
    assert _post(inbound_message(channel="SMS", identity="46812345678")).status_code == 200
    identity = lifecycle(pushed, "identified")[0]["conversation"]["identity"]
    assert identity["status"] == "ambiguous"
    assert sorted(c["name"] for c in identity["candidates"]) == [
        "Erik Lindqvist",
        "Karin Lindqvist",
    ]
    assert identity["verified"] is False
    assert background.wait_idle()
    assert fake_sinch.calls == []  # nobody asked Sinch for a name


def test_an_unknown_whatsapp_number_shows_the_number(fake_sinch, pushed):
    _post(inbound_message(identity="447700900123", contact_id="NOBODY"))
    identity = lifecycle(pushed, "identified")[0]["conversation"]["identity"]
    assert (identity["status"], identity["display_name"]) == ("unmatched", "+447700900123")


def test_sinch_chat_is_identified_by_its_chat_id(make_contact, fake_sinch, pushed):
    elena = make_contact("Elena Popescu", chat_ids=[("SINCH_CHAT", "sc-8f14e45fceea167a")])
    _post(inbound_message(channel="SINCH_CHAT", identity="sc-8f14e45fceea167a"))
    identity = lifecycle(pushed, "identified")[0]["conversation"]["identity"]
    assert identity["contact"]["id"] == elena.pk
    assert background.wait_idle()
    assert fake_sinch.calls == []


def test_an_agent_reply_goes_out_through_the_send_message_endpoint(anna, fake_sinch, agent):
    _post(inbound_message())
    conversation = Conversation.objects.get()
    reply = services.message_post(
        conversation=conversation, sender="agent", text="Hello Anna!", author_id=agent.pk
    )
    assert background.wait_idle()
    assert fake_sinch.sent[-1] == {
        "app_id": "01HZAPPEXAMP1E000000000001",
        "recipient": {"contact_id": "01HZC0NTACTEXAMP1E00000001"},
        "message": {"text_message": {"text": "Hello Anna!"}},
        "channel_priority_order": ["WHATSAPP"],
    }
    outbound = SinchOutboundMessage.objects.get(message=reply)
    assert outbound.state == "sent" and outbound.sinch_message_id


def test_a_reply_sinch_refuses_is_recorded_as_failed(anna, fake_sinch, agent, monkeypatch):
    monkeypatch.setattr(services, "REPLY_RETRY_DELAYS", (0.0, 0.0))
    _post(inbound_message())
    fake_sinch.fail_status = 503
    reply = services.message_post(
        conversation=Conversation.objects.get(), sender="agent", text="Hello?"
    )
    assert background.wait_idle()
    outbound = SinchOutboundMessage.objects.get(message=reply)
    assert (outbound.state, outbound.attempts) == ("failed", 3)
    assert "503" in outbound.error


def test_webchat_replies_do_not_go_to_sinch(fake_sinch):
    conversation, _ = services.conversation_start(channel="webchat", identifier="a@example.com")
    services.message_post(conversation=conversation, sender="agent", text="hi")
    assert not SinchOutboundMessage.objects.exists()


def test_the_link_remembers_how_to_reach_the_customer(anna, fake_sinch):
    _post(inbound_message())
    link = SinchLink.objects.get()
    assert (link.channel, link.contact_id, link.app_id, link.open_key) == (
        "WHATSAPP",
        "01HZC0NTACTEXAMP1E00000001",
        "01HZAPPEXAMP1E000000000001",
        "WHATSAPP:+46701234567",
    )


def test_conversation_stop_ends_the_conversation(anna, fake_sinch, pushed):
    _post(inbound_message())
    stop = {"app_id": "a", "conversation_stop_notification": {
        "conversation": {"id": "CONV-01HZC0NTACTEXAMP1E00000001"}}}  # fmt: skip
    assert _post(stop).json() == {"status": "accepted"}
    assert Conversation.objects.get().state == "ended"
    assert lifecycle(pushed, "ended")


def test_limits_and_configuration(fake_sinch, settings):
    settings.CP_WEBHOOK_MAX_BYTES = 2048
    big = inbound_message(text="x" * 4000)
    response = _post(big)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    settings.SINCH_CONVERSATION_WEBHOOK_SECRET = ""
    assert _post(inbound_message()).status_code == 503
    assert Client().get(URL).status_code == 405


def test_not_json_is_a_400(fake_sinch):
    assert _post(b"not json").status_code == 400


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"text_message": {"text": "hello"}}, "hello"),
        ({"media_message": {"url": "https://m.example/a.jpg"}}, "[media] https://m.example/a.jpg"),
        ({"location_message": {"title": "Home", "coordinates": {"latitude": 59.3,
          "longitude": 18.0}}}, "[location] Home (59.3, 18.0)"),
        ({"choice_response_message": {"message_id": "m1", "postback_data": "yes"}}, "[choice] yes"),
        ({"fallback_message": {"raw_message": "{...}", "reason": {"code": "UNSUPPORTED"}}},
         "[unsupported message] {...}"),
        ({"product_response_message": {"products": [{"id": "p1", "title": "Bike"}]}},
         "[products] Bike"),
        ({"sticker_message": {"id": "s"}}, "[sticker]"),
        ({}, "[empty message]"),
        # Found by tests/chat/webhooks/test_fuzz.py: a 500 before.
        ({"product_response_message": {"products": True}}, "[products]"),
    ],
)  # fmt: skip
def test_every_kind_of_contact_message_reads_as_text(message, text):
    assert contact_message_text(message) == text


def test_a_contact_sinch_does_not_know_is_not_asked_about_again(fake_sinch):
    _post(inbound_message(identity="447700900123", contact_id="UNKNOWN-TO-SINCH"))
    assert background.wait_idle()
    assert SinchContactName.objects.get(contact_id="UNKNOWN-TO-SINCH").name == ""
    services.conversation_end(conversation=Conversation.objects.get())
    _post(inbound_message(identity="447700900123", contact_id="UNKNOWN-TO-SINCH"))
    assert background.wait_idle()
    contact_calls = [path for _, path in fake_sinch.calls if "UNKNOWN-TO-SINCH" in path]
    assert len(contact_calls) == 1


# --- Every Conversation API channel: matched, unmatched, ambiguous, platform-named ---------

PHONE_CHANNELS = {"WHATSAPP", "RCS", "VIBERBM", "MMS", "SMS"}


@pytest.mark.parametrize("channel", sorted(services.SINCH_CHANNELS))
def test_every_channel_matched_unmatched_ambiguous_and_named_by_the_platform(
    make_contact, fake_sinch, pushed, channel
):
    if channel in PHONE_CHANNELS:
        # As Sinch sends them: E.164 digits without the plus.
        known, shared, stranger = "46701234567", "46812345678", "447700900123"
        values = {known: "+46701234567", shared: "+46812345678", stranger: "+447700900123"}
        make_contact("Anna Maria Svensson", country="SE", phones=["070-123 45 67"])
        make_contact("Erik Lindqvist", country="SE", phones=["08-123 456 78"])
        make_contact("Karin Lindqvist", country="SE", phones=["+46 8 123 456 78"])
    else:
        known, shared, stranger = "id-anna-1", "id-household-2", "id-stranger-3"
        values = {known: known, shared: shared, stranger: stranger}
        make_contact("Anna Maria Svensson", chat_ids=[(channel, known)])
        make_contact("Erik Lindqvist", chat_ids=[(channel, shared)])
        make_contact("Karin Lindqvist", chat_ids=[(channel, shared)])
        # The same id on another channel is another customer.
        make_contact(
            "Someone Else", chat_ids=[("WECHAT" if channel != "WECHAT" else "LINE", stranger)]
        )
    make_contact("Oliver Hughes", emails=["oliver@example.co.uk"])
    platform_names = {known: "Anna Svensson", shared: "Karin Lindqvist", stranger: "Oliver Hughes"}
    for identity, name in platform_names.items():
        fake_sinch.add_contact(f"C-{identity}", name)
        fake_sinch.profiles[(f"C-{identity}", channel)] = name
        response = _post(
            inbound_message(channel=channel, identity=identity, contact_id=f"C-{identity}")
        )
        assert response.status_code == 200, response.content
        # One name fetch at a time: the test database is SQLite in memory with
        # a shared cache, where concurrent writers fail at once ("table is
        # locked") instead of waiting as they do on the file database.
        assert background.wait_idle()

    first = {
        f["conversation"]["identity"]["identifier"]["value"]: f["conversation"]["identity"]
        for f in lifecycle(pushed, "identified")
    }
    assert {v: (i["status"], i["display_name"]) for v, i in first.items()} == {
        values[known]: ("matched", "Anna Maria Svensson"),
        values[shared]: ("ambiguous", values[shared]),
        values[stranger]: ("unmatched", values[stranger]),
    }
    assert first[values[shared]]["candidates_total"] == 2
    assert {i["verified"] for i in first.values()} == {channel != "SMS"}

    named = {
        f["conversation"]["identity"]["identifier"]["value"]: f["conversation"]["identity"]
        for f in lifecycle(pushed, "updated")
    }
    if channel in {"SMS", "SINCH_CHAT"}:
        # Never a platform name: nobody asks Sinch, nothing changes.
        assert named == {}
        assert fake_sinch.calls == []
        return
    assert {v: (i["status"], i["display_name"], i["name_source"]) for v, i in named.items()} == {
        values[known]: ("matched", "Anna Svensson", "platform"),
        values[shared]: ("ambiguous", "Karin Lindqvist", "platform"),
        values[stranger]: ("unmatched", "Oliver Hughes", "platform"),
    }
    # The name is checked against the directory: the extension area's possible match.
    assert {v: i["possible_match"]["name"] for v, i in named.items()} == {
        values[known]: "Anna Maria Svensson",
        values[shared]: "Karin Lindqvist",
        values[stranger]: "Oliver Hughes",
    }


def test_nul_characters_in_a_callback_are_dropped(anna, fake_sinch):
    # PostgreSQL text cannot hold NUL (a 500 there before).
    response = _post(inbound_message(text="Hi\x00 there", contact_id="C\x001"))
    assert response.json() == {"status": "accepted"}
    assert Message.objects.get().text == "Hi there"
    assert SinchLink.objects.get().contact_id == "C1"
