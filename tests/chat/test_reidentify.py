"""Every kind of directory change re-identifies the open conversations it touches."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from chat import events
from chat.models import Conversation
from chat.services import conversation_end, conversation_start
from directory.models import Contact, ContactEmail

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pushed(monkeypatch):
    """The console frames chat.events publishes, decoded, in order."""
    frames: list[dict] = []
    monkeypatch.setattr(events, "_send", lambda event: frames.append(json.loads(event["console"])))
    return frames


def _updates(frames, conversation):
    return [
        f["conversation"]["identity"]
        for f in frames
        if f.get("event") == "updated" and f["conversation"]["id"] == str(conversation.pk)
    ]


def test_starting_pushes_started_then_identified(pushed):
    conversation, _ = conversation_start(channel="webchat", identifier="a@example.com")
    assert [(f["event"], f["conversation"]["id"]) for f in pushed] == [
        ("started", str(conversation.pk)),
        ("identified", str(conversation.pk)),
    ]


def test_an_admin_editing_an_identifier_reidentifies_old_and_new_holders(
    admin_client, make_contact, pushed
):
    anna = make_contact("Anna", emails=["anna@example.com"])
    was_anna, _ = conversation_start(channel="webchat", identifier="anna@example.com")
    now_anna, _ = conversation_start(channel="webchat", identifier="anna@new.example")
    email = ContactEmail.objects.get(contact=anna)
    response = admin_client.post(
        reverse("admin:directory_contact_change", args=[anna.pk]),
        {
            "name": "Anna", "company": "", "country": "", "external_id": "",
            "emails-TOTAL_FORMS": "1", "emails-INITIAL_FORMS": "1",
            "emails-0-id": str(email.pk), "emails-0-contact": str(anna.pk),
            "emails-0-value": "Anna@New.Example",
            "phones-TOTAL_FORMS": "0", "phones-INITIAL_FORMS": "0",
            "chat_ids-TOTAL_FORMS": "0", "chat_ids-INITIAL_FORMS": "0",
        },
    )  # fmt: skip
    assert response.status_code == 302
    assert _updates(pushed, was_anna)[-1]["status"] == "unmatched"
    assert _updates(pushed, now_anna)[-1]["display_name"] == "Anna"


def test_a_merge_turns_an_ambiguous_conversation_into_a_match(admin_client, make_contact, pushed):
    lars = make_contact("Lars Berg", emails=["support@example.com"])
    sofia = make_contact("Sofia Ek", emails=["support@example.com"])
    conversation, _ = conversation_start(channel="webchat", identifier="support@example.com")
    assert conversation.identity["status"] == "ambiguous"
    admin_client.post(
        reverse("admin:directory_contact_changelist"),
        {"action": "merge_contacts", "_selected_action": [lars.pk, sofia.pk],
         "confirm": "yes", "keep": lars.pk},
    )  # fmt: skip
    identity = _updates(pushed, conversation)[-1]
    assert (identity["status"], identity["display_name"]) == ("matched", "Lars Berg")


def test_an_admin_csv_import_names_waiting_visitors(admin_client, pushed):
    conversation, _ = conversation_start(channel="webchat", identifier="new@example.com")
    csv_file = SimpleUploadedFile(
        "c.csv",
        b"external_id,name,company,country,emails,phones,chat_ids\n"
        b",New Person,,,new@example.com,,\n",
    )
    admin_client.post(reverse("admin:directory_contact_import"), {"file": csv_file})
    assert _updates(pushed, conversation)[-1]["display_name"] == "New Person"


def test_a_failed_import_pushes_nothing(admin_client, pushed):
    conversation_start(channel="webchat", identifier="new@example.com")
    pushed.clear()
    csv_file = SimpleUploadedFile(
        "c.csv",
        b"external_id,name,company,country,emails,phones,chat_ids\n"
        b",New,,,new@example.com,,\n,,,,,,\n,No Email,,,broken,,\n",
    )
    admin_client.post(reverse("admin:directory_contact_import"), {"file": csv_file})
    assert pushed == []


def test_deleting_a_contact_unmatches_its_conversations(make_contact, pushed):
    anna = make_contact("Anna", phones=["+46701234567"])
    conversation, _ = conversation_start(channel="voice", identifier="46701234567")
    anna.delete()
    assert _updates(pushed, conversation)[-1]["status"] == "unmatched"


def test_ended_conversations_and_unrelated_changes_push_nothing(make_contact, pushed):
    ended, _ = conversation_start(channel="webchat", identifier="gone@example.com")
    conversation_end(conversation=ended)
    unrelated, _ = conversation_start(channel="webchat", identifier="other@example.com")
    pushed.clear()
    make_contact("Gone", emails=["gone@example.com"])
    assert pushed == []
    assert Conversation.objects.get(pk=ended.pk).identity["status"] == "unmatched"
    assert Contact.objects.count() == 1
    assert _updates(pushed, unrelated) == []
