"""Every webhook parser fed arbitrary bodies (hypothesis), signed so they reach
the parser: never a 500, never anything but the documented answers, and
nothing stored from a body that was refused. A refused inbound email is kept
whole for an admin (RejectedEmail): refused, but not lost."""

import json
import uuid
from pathlib import Path

import pytest
from django.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chat import background
from chat.models import Conversation, Message, RejectedEmail
from chat.webhooks.email import MalformedEmail, parse_email
from tests.chat.webhooks.conftest import (
    EMAIL_TOKEN,
    inbound_message,
    sinch_headers,
    voice_headers,
)

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = Path(__file__).resolve().parent / "sinch_examples"
FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=8,
)  # fmt: skip


def mutated(value: object) -> st.SearchStrategy:
    """``value`` with some of its parts replaced by other JSON, or dropped."""
    if isinstance(value, dict):
        parts = {key: mutated(item) for key, item in value.items()}
        same_keys = st.fixed_dictionaries(parts)
        return st.one_of(same_keys, same_keys, st.fixed_dictionaries({}, optional=parts), JSON)
    if isinstance(value, list):
        return st.one_of(st.tuples(*(mutated(item) for item in value)).map(list), JSON)
    return st.one_of(st.just(value), st.just(value), JSON)


def _bodies(*examples: object) -> st.SearchStrategy[bytes]:
    return st.one_of(
        *(mutated(example).map(lambda v: json.dumps(v).encode()) for example in examples),
        JSON.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=500),
    )


def _counts() -> tuple[int, int]:
    # An accepted callback may fetch a platform name on a background thread;
    # let it finish so examples do not overlap (the test database is an
    # in-memory SQLite, which locks whole tables).
    assert background.wait_idle(15)
    return Conversation.objects.count(), Message.objects.count()


CONVERSATION_EXAMPLES = [
    inbound_message(),
    inbound_message(channel="MESSENGER", identity="2742085512340733"),
    *(
        json.loads((EXAMPLES / name).read_text())
        for name in (
            "conversation_message_inbound_messenger.json",
            "conversation_contact_identities_duplication.json",
        )
    ),
    {"contact_update_notification": {"contact": {"id": "C1", "display_name": "Zoe"}}},
    {"conversation_stop_notification": {"conversation": {"id": "CONV-1"}}},
    {
        "message": {
            "contact_message": {"location_message": {"coordinates": {}}},
            "channel_identity": {"channel": "SMS", "identity": "46701234567"},
        }
    },
    {
        "message": {
            "contact_message": {"product_response_message": {"products": [{}]}},
            "channel_identity": {"channel": "VIBER", "identity": "v1"},
        }
    },
]


@FUZZ
@given(body=_bodies(*CONVERSATION_EXAMPLES))
def test_sinch_conversation_callbacks_of_any_shape(fake_sinch, body):
    before = _counts()
    response = Client().post(
        "/webhooks/sinch/conversation/", body, content_type="application/json",
        **sinch_headers(body),
    )  # fmt: skip
    assert response.status_code in {200, 400}, response.content
    answer = response.json()
    event(f"{response.status_code} {answer.get('status', answer.get('error'))}")
    if response.status_code == 400 or answer["status"] == "ignored":
        assert _counts() == before
    else:
        assert answer["status"] == "accepted"


VOICE_EXAMPLES = [
    json.loads((EXAMPLES / "voice_ice.json").read_text()),
    {"event": "ace", "callid": "4398599d1ba84ef3bde0a82dfb61abed"},
    {"event": "dice", "callid": "4398599d1ba84ef3bde0a82dfb61abed", "reason": "MANAGERHANGUP"},
    {"event": "pie", "callid": "c", "menuResult": {"type": "return", "value": "1"}},
]


@FUZZ
@given(body=_bodies(*VOICE_EXAMPLES))
def test_sinch_voice_callbacks_of_any_shape(fake_sinch, body):
    before = _counts()
    # Django's test client sends no Content-Type with an empty body; sign what is sent.
    content_type = "application/json; charset=utf-8" if body else ""
    response = Client().post(
        "/webhooks/sinch/voice/", body, content_type=content_type,
        **voice_headers(body, content_type=content_type),
    )  # fmt: skip
    assert response.status_code in {200, 400}, response.content
    event(f"{response.status_code}")
    if response.status_code == 400:
        assert _counts() == before
    if response.content:
        answer = response.json()
        if "action" in answer:  # SVAML for ice and ace
            assert answer["action"]["name"] in {"park", "connectPstn", "continue"}


EMAIL = (
    b"From: =?utf-8?q?J=C3=BCrgen?= <jurgen@example.com>\r\nTo: support@cp.example\r\n"
    b"Subject: Order\r\nMessage-ID: <m1@example.com>\r\nIn-Reply-To: <x@y>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n"
    b"--b\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n<p>Hello<script>x</script>\r\n"
    b"--b--\r\n"
)
HEADER_NAMES = ["From", "Subject", "Message-ID", "In-Reply-To", "References", "Content-Type",
                "Content-Transfer-Encoding", "MIME-Version", "Content-Disposition"]  # fmt: skip


@st.composite
def raw_emails(draw) -> bytes:
    """A real message with bytes cut, replaced and inserted, and random headers added."""
    raw = bytearray(EMAIL)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["cut", "insert", "header"]))
        if action == "cut":
            del raw[at : at + draw(st.integers(1, 40))]
        elif action == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=30))
        else:
            name = draw(st.sampled_from(HEADER_NAMES))
            value = draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
            raw[0:0] = name.encode() + b": " + value + b"\r\n"
    return bytes(raw)


EMAILS = st.one_of(raw_emails(), raw_emails(), st.binary(max_size=400))


@settings(max_examples=1500, deadline=None)
@given(raw=EMAILS)
def test_the_email_parser_raises_only_malformed_email(raw):
    try:
        parsed = parse_email(raw)
    except MalformedEmail as error:
        assert error.code and error.message
        return
    assert "@" in parsed.from_address
    assert parsed.text


@FUZZ
@given(raw=EMAILS)
def test_inbound_emails_of_any_shape_are_stored_or_kept_as_rejected(fake_sinch, raw):
    before, rejected = _counts(), RejectedEmail.objects.count()
    response = Client().post(
        "/webhooks/email/", raw, content_type="message/rfc822",
        HTTP_AUTHORIZATION=f"Bearer {EMAIL_TOKEN}",
    )  # fmt: skip
    assert response.status_code in {200, 400}, response.content
    answer = response.json()
    event(f"{response.status_code} {answer.get('error', 'stored')}")
    if response.status_code == 400:
        assert _counts() == before
        kept = RejectedEmail.objects.get(pk=answer["rejected_email_id"])
        assert bytes(kept.raw) == raw
    else:
        assert RejectedEmail.objects.count() == rejected
        assert Message.objects.filter(pk=answer["message_id"]).exists()


def test_the_fuzzers_reach_the_parsers(fake_sinch):
    """The signing above is right: a valid body goes all the way through."""
    body = json.dumps(inbound_message(message_id=uuid.uuid4().hex)).encode()
    response = Client().post("/webhooks/sinch/conversation/", body,
                             content_type="application/json", **sinch_headers(body))  # fmt: skip
    assert response.json() == {"status": "accepted"}
    ice = (EXAMPLES / "voice_ice.json").read_bytes()
    response = Client().post("/webhooks/sinch/voice/", ice,
                             content_type="application/json; charset=utf-8",
                             **voice_headers(ice))  # fmt: skip
    assert response.json()["action"]["name"] == "park"
