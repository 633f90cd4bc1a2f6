"""POST /webhooks/sinch/voice/: calls ring on the consoles, identified from the caller id."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.test import Client

from chat.models import Conversation, VoiceCall
from tests.chat.webhooks.conftest import lifecycle, voice_headers

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/webhooks/sinch/voice/"
ICE = json.loads(
    (Path(__file__).resolve().parent / "sinch_examples" / "voice_ice.json").read_text()
)
CONTENT_TYPE = "application/json; charset=utf-8"


def _post(payload: dict | bytes, **signing):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = signing.pop("headers", None)
    if headers is None:
        headers = voice_headers(raw, **signing)
    return Client().post(URL, data=raw, content_type=CONTENT_TYPE, **headers)


def _ice(callid: str = "call-1", cli: str = "46701234567") -> dict:
    return {**ICE, "callid": callid, "cli": cli}


@pytest.fixture
def household(make_contact):
    return [
        make_contact("Anna Maria Svensson", country="SE", phones=["070-123 45 67"]),
        make_contact("Erik Lindqvist", country="SE", phones=["08-123 456 78"]),
        make_contact("Karin Lindqvist", country="SE", phones=["+46 8 123 456 78"]),
    ]


def test_an_incoming_call_rings_on_the_consoles_identified(household, fake_sinch, pushed):
    response = _post((Path(__file__).parent / "sinch_examples" / "voice_ice.json").read_bytes())
    assert response.status_code == 200, response.content
    assert response.json() == {
        "instructions": [],
        "action": {
            "name": "park",
            "introPrompt": "#tts[Thank you for calling. An agent will be with you shortly.]",
            "holdPrompt": "#tts[Thank you for calling. An agent will be with you shortly.]",
            "maxDuration": 600,
        },
    }
    conversation = lifecycle(pushed, "identified")[0]["conversation"]
    assert (conversation["channel"], conversation["call_state"]) == ("voice", "ringing")
    identity = conversation["identity"]
    assert (identity["status"], identity["display_name"]) == ("matched", "Anna Maria Svensson")
    assert identity["verified"] is False
    call = VoiceCall.objects.get()
    assert (call.call_id, call.cli, call.to_endpoint) == (
        "4398599d1ba84ef3bde0a82dfb61abed",
        "46701234567",
        "+46700000001",
    )


@pytest.mark.parametrize("cli", ["+46812345678", "46812345678"])
def test_a_shared_number_is_ambiguous_with_or_without_plus(household, fake_sinch, pushed, cli):
    _post(_ice(cli=cli))
    identity = lifecycle(pushed, "identified")[0]["conversation"]["identity"]
    assert identity["status"] == "ambiguous"
    assert identity["identifier"]["value"] == "+46812345678"
    assert identity["candidates_total"] == 2


@pytest.mark.parametrize("cli", ["", "anonymous", "private"])
def test_a_withheld_caller_is_shown_as_withheld(fake_sinch, pushed, cli):
    payload = _ice(cli=cli)
    assert _post(payload).status_code == 200
    identity = lifecycle(pushed, "identified")[0]["conversation"]["identity"]
    assert (identity["status"], identity["display_name"]) == ("withheld", "Withheld number")


def test_an_unknown_caller_and_an_unreadable_cli(fake_sinch, pushed):
    _post(_ice(callid="a", cli="15550100999"))
    _post(_ice(callid="b", cli="sip:someone@pbx.example"))
    first, second = (f["conversation"]["identity"] for f in lifecycle(pushed, "identified"))
    assert (first["status"], first["display_name"]) == ("unmatched", "+15550100999")
    assert second["status"] == "withheld"
    assert VoiceCall.objects.get(call_id="b").cli == "sip:someone@pbx.example"


def test_the_call_connects_to_the_contact_center_when_configured(fake_sinch, settings):
    settings.SINCH_VOICE_CONNECT_NUMBER = "+46700000099"
    answer = _post(_ice()).json()
    assert answer["action"] == {"name": "connectPstn", "number": "+46700000099",
                                "cli": "+46701234567"}  # fmt: skip


def test_answered_then_disconnected(household, fake_sinch, pushed):
    _post(_ice())
    ace = {"event": "ace", "callid": "call-1", "timestamp": "2024-05-02T10:20:05Z", "version": 1}
    answered = _post(ace)
    assert answered.json() == {"instructions": [], "action": {"name": "continue"}}
    update = lifecycle(pushed, "updated")[-1]["conversation"]
    assert (update["state"], update["call_state"]) == ("open", "answered")

    dice = {"event": "dice", "callid": "call-1", "reason": "CALLERHANGUP", "result": "ANSWERED"}
    assert _post(dice).status_code == 200
    ended = lifecycle(pushed, "ended")[-1]["conversation"]
    assert (ended["state"], ended["call_state"]) == ("ended", "ended")
    assert Conversation.objects.get().state == "ended"
    assert _post(dice).status_code == 200  # told twice: ended once
    assert len(lifecycle(pushed, "ended")) == 1


def test_a_call_never_answered_ends_too(fake_sinch, pushed):
    _post(_ice())
    _post({"event": "dice", "callid": "call-1", "reason": "CALLERHANGUP", "result": "NOANSWER"})
    assert lifecycle(pushed, "ended")[-1]["conversation"]["call_state"] == "ended"


def test_sinch_asking_twice_about_a_call_opens_one_conversation(fake_sinch, pushed):
    _post(_ice())
    _post(_ice())
    assert Conversation.objects.count() == 1
    assert len(lifecycle(pushed, "identified")) == 1


def test_a_replayed_signed_request_changes_nothing(household, fake_sinch, pushed):
    """Voice signatures carry no nonce: a request replayed inside the freshness
    window verifies, so every event must be harmless to repeat."""
    recorded = {}
    for payload in (
        _ice(),
        {"event": "ace", "callid": "call-1"},
        {"event": "dice", "callid": "call-1"},
    ):
        raw = json.dumps(payload).encode()
        recorded[payload["event"]] = (raw, voice_headers(raw))
        assert _post(raw, headers=recorded[payload["event"]][1]).status_code == 200
    events_before = [(f["event"], f["conversation"]["call_state"]) for f in lifecycle(pushed)]
    for raw, headers in recorded.values():  # the whole call again, byte for byte
        assert _post(raw, headers=headers).status_code == 200
    assert [(f["event"], f["conversation"]["call_state"]) for f in lifecycle(pushed)] == (
        events_before
    )
    assert events_before == [
        ("started", "ringing"), ("identified", "ringing"), ("updated", "answered"),
        ("ended", "ended"),
    ]  # fmt: skip
    conversation = Conversation.objects.get()
    assert (conversation.state, conversation.call_state) == ("ended", "ended")
    assert VoiceCall.objects.get().state == "ended"


def test_events_for_unknown_calls_and_other_events_are_ignored(fake_sinch, pushed):
    assert _post({"event": "ace", "callid": "nobody"}).status_code == 200
    assert _post({"event": "notify", "type": "recordingFinished"}).status_code == 200
    assert _post({"event": "pie", "callid": "x", "menuResult": {}}).status_code == 200
    # An event that is not a string was a 500 (found by tests/chat/webhooks/test_fuzz.py).
    assert _post({"event": [], "callid": "x"}).status_code == 200
    assert _post({"event": {"ice": 1}, "callid": "x", "cli": "46701234567"}).status_code == 200
    assert pushed == []


@pytest.mark.parametrize(
    ("signing", "code"),
    [
        ({"secret": "d3Jvbmctc2VjcmV0"}, "invalid_signature"),
        ({"key": "another-application"}, "invalid_signature"),
        ({"path": "/somewhere/else/"}, "invalid_signature"),
        # Minutes from the moment of signing, not of test collection.
        ({"age_minutes": 10}, "stale_timestamp"),
        ({"age_minutes": -10}, "stale_timestamp"),
        ({"headers": {}}, "missing_signature"),
    ],
    ids=["wrong-secret", "wrong-key", "wrong-path", "stale", "future", "unsigned"],
)
def test_wrong_or_missing_signatures_are_refused_and_nothing_stored(
    fake_sinch, pushed, signing, code
):
    signing = dict(signing)
    if "age_minutes" in signing:
        signed_at = datetime.now(UTC) - timedelta(minutes=signing.pop("age_minutes"))
        signing["timestamp"] = signed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    response = _post(_ice(), **signing)
    assert (response.status_code, response.json()["error"]) == (401, code)
    assert not Conversation.objects.exists()
    assert not VoiceCall.objects.exists()
    assert pushed == []


def test_a_signature_over_another_content_type_is_refused(fake_sinch):
    raw = json.dumps(_ice()).encode()
    headers = voice_headers(raw, content_type="application/json")
    response = Client().post(URL, data=raw, content_type=CONTENT_TYPE, **headers)
    assert response.status_code == 401


def test_configuration_limits_and_bad_bodies(fake_sinch, settings):
    assert _post(b"{not json").status_code == 400
    assert _post({"event": "ice"}).status_code == 400  # no callid
    settings.CP_WEBHOOK_MAX_BYTES = 1024
    assert _post({**_ice(), "custom": "x" * 2000}).status_code == 413
    settings.SINCH_VOICE_APP_SECRET = ""
    assert _post(_ice()).status_code == 503
