"""POST /webhooks/email/: raw RFC 5322 messages in, identified by From, threaded."""

from pathlib import Path

import pytest
from django.test import Client

from chat import services
from chat.models import Conversation, InboundEmail, Message, RejectedEmail
from chat.webhooks.email import MalformedEmail, html_to_text, parse_email
from tests.chat.webhooks.conftest import EMAIL_TOKEN, lifecycle

URL = "/webhooks/email/"
ROOT = Path(__file__).resolve().parents[3]


def _email(
    *,
    sender: str = "Anna Svensson <anna.svensson@nordicbikes.se>",
    subject: str = "My order",
    message_id: str = "<m1@mail.nordicbikes.se>",
    body: str = "Where is my bike?",
    extra: str = "",
) -> bytes:
    return (
        f"From: {sender}\r\nTo: support@cp.example\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\nDate: Thu, 02 May 2024 10:20:00 +0000\r\n{extra}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    ).encode()


# --- The parser ------------------------------------------------------------------


def test_encoded_words_and_internationalised_addresses_are_decoded():
    raw = (
        "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jürgen@müller.example>\r\n"
        "Subject: =?utf-8?b?w4RyZ2Vy?= mit der Lieferung\r\n"
        "Message-ID: <x1@müller.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Grüße\r\n"
    ).encode()
    parsed = parse_email(raw)
    assert parsed.from_address == "jürgen@müller.example"
    assert parsed.from_name == "Jürgen Müller"
    assert parsed.subject == "Ärger mit der Lieferung"
    assert parsed.text == "Grüße"
    assert parsed.header_message_id == "x1@müller.example"


def test_the_plain_part_is_preferred_and_html_only_mail_becomes_text():
    alternative = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nPlain words\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<p>HTML words</p>\r\n--b--\r\n"
    )
    assert parse_email(alternative).text == "Plain words"
    html_only = (
        b"From: a@example.com\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"<html><head><style>p{}</style></head><body><p>Hej <b>Anna</b>,</p>"
        b"<p>Tack f=F6r ditt k=F6p.</p><script>alert(1)</script></body></html>\r\n"
    )
    assert parse_email(html_only).text == "Hej Anna,\nTack för ditt köp."


def test_attachments_are_named_in_the_text():
    raw = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee attached\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="invoice.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n"
    )
    assert parse_email(raw).text == "See attached\n[attachment: invoice.pdf]"


def test_reply_headers_give_the_thread_likeliest_parent_first():
    raw = _email(
        message_id="<m3@x>",
        extra="In-Reply-To: <m2@x>\r\nReferences: <m0@x> <m1@x>\r\n\t<m2@x>\r\n",
    )
    assert parse_email(raw).references == ["m2@x", "m1@x", "m0@x"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "empty"),
        (b"just some words, no header at all", "no_headers"),
        (b"Subject: hello\r\n\r\nbody", "missing_from"),
        (b"From: not an address\r\n\r\nbody", "invalid_from"),
        (b"From: Someone <someone@@example.com>\r\n\r\nbody", "invalid_from"),
    ],
)
def test_malformed_messages_say_why(raw, code):
    with pytest.raises(MalformedEmail) as refused:
        parse_email(raw)
    assert refused.value.code == code
    assert refused.value.message


def test_html_to_text_keeps_blocks_apart_and_inline_together():
    assert html_to_text("<div>One <i>two</i></div><div>three<br>four</div>") == (
        "One two\nthree\nfour"
    )


# --- The view ----------------------------------------------------------------------

pytest_django_db = pytest.mark.django_db(transaction=True)


def _post(raw: bytes, *, token: str = EMAIL_TOKEN, content_type: str = "message/rfc822"):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return Client().post(URL, data=raw, content_type=content_type, **headers)


@pytest.fixture
def directory(make_contact):
    return {
        "anna": make_contact("Anna Maria Svensson", emails=["anna.svensson@nordicbikes.se"]),
        "lars": make_contact("Lars Berg", emails=["support@nordicbikes.se"]),
        "sofia": make_contact("Sofia Ek", emails=["Support@NordicBikes.se"]),
    }


@pytest_django_db
def test_a_known_sender_is_identified(directory, fake_sinch, pushed):
    response = _post(_email())
    assert response.status_code == 200, response.content
    assert response.json()["duplicate"] is False
    conversation = lifecycle(pushed, "identified")[0]["conversation"]
    assert (conversation["channel"], conversation["subject"]) == ("email", "My order")
    identity = conversation["identity"]
    assert (identity["status"], identity["display_name"]) == ("matched", "Anna Maria Svensson")
    assert identity["claimed_name"] == "Anna Svensson"
    assert identity["verified"] is False
    assert Message.objects.get().text == "Where is my bike?"


@pytest_django_db
def test_unknown_and_shared_addresses(directory, fake_sinch, pushed):
    _post(_email(sender="Walk In <Walk.In@Example.net>", message_id="<a@x>"))
    _post(_email(sender="=?utf-8?q?Support_Team?= <support@nordicbikes.se>", message_id="<b@x>"))
    unknown, shared = (f["conversation"]["identity"] for f in lifecycle(pushed, "identified"))
    assert (unknown["status"], unknown["display_name"]) == ("unmatched", "walk.in@example.net")
    assert unknown["claimed_name"] == "Walk In"
    assert shared["status"] == "ambiguous"
    assert sorted(c["name"] for c in shared["candidates"]) == ["Lars Berg", "Sofia Ek"]
    assert shared["claimed_name"] == "Support Team"


@pytest_django_db
def test_replies_thread_into_the_open_conversation(directory, fake_sinch):
    first = _post(_email(message_id="<m1@x>")).json()
    reply = _post(
        _email(
            subject="Re: My order",
            message_id="<m2@x>",
            body="Any news?",
            extra="In-Reply-To: <m1@x>\r\nReferences: <m1@x>\r\n",
        )
    ).json()
    # A reply whose References name only an older message of the thread.
    later = _post(
        _email(message_id="<m3@x>", body="Hello?", extra="References: <m0@elsewhere> <m1@x>\r\n")
    ).json()
    assert first["conversation_id"] == reply["conversation_id"] == later["conversation_id"]
    conversation = Conversation.objects.get()
    assert list(conversation.messages.values_list("text", flat=True)) == [
        "Where is my bike?",
        "Any news?",
        "Hello?",
    ]
    services.conversation_end(conversation=conversation)
    after_end = _post(_email(message_id="<m4@x>", extra="In-Reply-To: <m3@x>\r\n")).json()
    assert after_end["conversation_id"] != first["conversation_id"]


@pytest_django_db
def test_an_email_delivered_twice_is_stored_once(directory, fake_sinch, pushed):
    first = _post(_email()).json()
    again = _post(_email()).json()
    assert again == {**first, "duplicate": True}
    assert Message.objects.count() == 1
    assert InboundEmail.objects.count() == 1
    assert len(lifecycle(pushed, "identified")) == 1


@pytest_django_db
def test_a_malformed_email_is_refused_with_a_reason_and_kept(fake_sinch, pushed):
    raw = b"Subject: no sender\r\n\r\nWho am I?"
    response = _post(raw)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "missing_from"
    assert "From" in body["message"]
    rejected = RejectedEmail.objects.get(pk=body["rejected_email_id"])
    assert bytes(rejected.raw) == raw
    assert (rejected.reason_code, rejected.size) == ("missing_from", len(raw))
    assert not Conversation.objects.exists()
    assert pushed == []


@pytest_django_db
def test_a_rejected_senders_address_is_kept_for_admins_but_never_logged(fake_sinch, caplog):
    raw = _email(sender="Someone <mallory.secret@example>")
    response = _post(raw)
    assert response.status_code == 400
    assert "mallory.secret" in RejectedEmail.objects.get().reason  # admins still see it
    assert "inbound email rejected (invalid_from" in caplog.text
    assert "mallory.secret" not in caplog.text


@pytest_django_db
def test_an_admin_can_read_a_rejected_email(fake_sinch, admin_client):
    _post(b"From: nobody\r\n\r\nunreadable sender")
    rejected = RejectedEmail.objects.get()
    page = admin_client.get(f"/admin/chat/rejectedemail/{rejected.pk}/change/")
    assert page.status_code == 200
    assert "unreadable sender" in page.content.decode()
    listing = admin_client.get("/admin/chat/rejectedemail/")
    assert "invalid_from" in listing.content.decode()


@pytest_django_db
def test_authorisation_size_and_content_type(fake_sinch, settings):
    assert _post(_email(), token="wrong").status_code == 401
    assert _post(_email(), token="").status_code == 401
    assert _post(_email(), content_type="multipart/form-data; boundary=x").status_code == 415
    settings.EMAIL_INBOUND_MAX_BYTES = 1024
    too_big = _post(_email(body="x" * 2000))
    assert (too_big.status_code, too_big.json()["error"]) == (413, "too_large")
    settings.EMAIL_INBOUND_TOKEN = ""
    assert _post(_email()).status_code == 503
    assert not Conversation.objects.exists()
    assert not RejectedEmail.objects.exists()


@pytest_django_db
def test_an_email_larger_than_djangos_own_upload_cap_is_accepted(directory, fake_sinch, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = _post(_email(body="long story " * 1000))
    assert response.status_code == 200, response.content


@pytest_django_db
def test_a_charset_with_a_nul_in_its_name_is_read_anyway(fake_sinch):
    # Found by fuzz/email_fuzz.py: bytes.decode raised ValueError, a 500.
    raw = _email(body="Hello").replace(b"charset=utf-8", b"charset=utf-\x00\x00")
    response = _post(raw)
    assert response.status_code == 200, response.content
    assert Message.objects.get().text == "Hello"


@pytest_django_db
def test_a_message_the_parser_chokes_on_is_kept_for_an_admin(fake_sinch, monkeypatch):
    from chat.webhooks import email as email_webhook

    def choke(raw):
        raise RuntimeError("a corner of the stdlib parser")

    monkeypatch.setattr(email_webhook, "parse_email", choke)
    raw = _email()
    response = _post(raw)
    assert (response.status_code, response.json()["error"]) == (400, "unreadable")
    assert bytes(RejectedEmail.objects.get().raw) == raw
    assert not Conversation.objects.exists()


@pytest_django_db
def test_nul_characters_are_dropped_not_a_500_on_postgresql(fake_sinch):
    # Found by tests/chat/webhooks/test_fuzz.py on PostgreSQL, whose text cannot hold NUL.
    raw = _email(sender="Ann\x00a <anna@example.com>", subject="Hi\x00", body="Hel\x00lo")
    response = _post(raw)
    assert response.status_code == 200, response.content
    message = Message.objects.get()
    assert message.text == "Hello"
    assert message.conversation.subject == "Hi"
    assert _post(b"From: \x00nobody\r\n\r\n").status_code == 400


@pytest_django_db
def test_a_part_whose_charset_holds_a_nul_is_read_anyway(fake_sinch):
    # Found by fuzz/email_fuzz.py (its input, kept in the seed corpus): listing
    # the attachments raised ValueError.
    raw = (ROOT / "fuzz/corpus/email/regression-nul-charset-multipart.eml").read_bytes()
    response = _post(raw)
    assert response.status_code == 200, response.content
    assert "(unreadable)" in Message.objects.get().text


@pytest_django_db
def test_a_message_the_stdlib_parser_fails_on_is_kept_as_rejected(fake_sinch):
    # Found by fuzz/email_fuzz.py: email's own parser raises IndexError on it.
    raw = (ROOT / "fuzz/corpus/email/regression-stdlib-indexerror.eml").read_bytes()
    with pytest.raises(MalformedEmail):
        parse_email(raw)
    response = _post(raw)
    assert (response.status_code, response.json()["error"]) == (400, "unreadable")
    assert bytes(RejectedEmail.objects.get().raw) == raw
