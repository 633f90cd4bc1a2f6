"""The directory in Django admin, through the test client as an admin uses it."""

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.urls import reverse

from directory.models import Contact, ContactChatId, ContactEmail, ContactPhone

CHANGELIST = reverse("admin:directory_contact_changelist")
ADD = reverse("admin:directory_contact_add")


def _inline_management(prefix: str, total: int = 1, initial: int = 0) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def _add_form(**fields) -> dict[str, str]:
    data = {"name": "", "company": "", "country": "", "external_id": ""}
    data |= _inline_management("emails") | _inline_management("phones")
    data |= _inline_management("chat_ids", total=0)
    data |= {"emails-0-value": "", "phones-0-value": ""}
    data |= fields
    return data


# --- Adding contacts through the inlines ------------------------------------


def test_an_admin_adds_a_contact_with_identifiers_stored_normalised(admin_client):
    response = admin_client.post(
        ADD,
        _add_form(
            name="Oliver Hughes",
            country="gb",
            **{"emails-0-value": "Oliver@Hughes.CO.UK", "phones-0-value": "020 7946 0958"},
        ),
    )
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    contact = Contact.objects.get(name="Oliver Hughes")
    assert contact.country == "GB"
    assert list(contact.emails.values_list("value", flat=True)) == ["oliver@hughes.co.uk"]
    assert [str(p.value) for p in contact.phones.all()] == ["+442079460958"]


def test_a_national_number_is_read_in_the_contacts_own_country(admin_client):
    admin_client.post(
        ADD, _add_form(name="Anna Svensson", country="SE", **{"phones-0-value": "070-123 45 67"})
    )
    assert str(ContactPhone.objects.get().value) == "+46701234567"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("emails-0-value", "anna@", "is not a valid email address"),
        ("phones-0-value", "12345", "is not a valid phone number"),
        ("country", "XX", "not an ISO 3166 alpha-2 country code"),
    ],
)
def test_invalid_identifiers_are_refused_with_a_clear_message(admin_client, field, value, message):
    response = admin_client.post(ADD, _add_form(name="Anna", **{field: value}))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Contact.objects.exists()


def test_one_contact_cannot_hold_the_same_email_twice(admin_client):
    data = _add_form(name="Anna", **{"emails-0-value": "anna@example.com"})
    data |= _inline_management("emails", total=2) | {"emails-1-value": "ANNA@example.com"}
    response = admin_client.post(ADD, data)
    assert response.status_code == 200
    assert "Please correct the duplicate data" in response.content.decode()
    assert not Contact.objects.exists()


def test_two_contacts_may_share_a_number(admin_client, make_contact):
    make_contact("Erik Lindqvist", country="SE", phones=["08-123 456 78"])
    response = admin_client.post(
        ADD, _add_form(name="Karin Lindqvist", country="SE", **{"phones-0-value": "08 12345678"})
    )
    assert response.status_code == 302
    assert ContactPhone.objects.filter(value="+46812345678").count() == 2


# --- Search by any identifier in any format ---------------------------------


@pytest.mark.parametrize(
    "typed",
    ["020 7946 0958", "+44 20 7946 0958", "442079460958", "0044 20 7946 0958", "+442079460958"],
)
def test_search_finds_a_contact_by_a_number_typed_in_any_format(admin_client, make_contact, typed):
    make_contact("Oliver Hughes", country="GB", phones=["+44 20 7946 0958"])
    make_contact("Somebody Else", country="GB", phones=["020 7946 0123"])
    response = admin_client.get(CHANGELIST, {"q": typed})
    names = [c.name for c in response.context["cl"].result_list]
    assert names == ["Oliver Hughes"]


@pytest.mark.parametrize(
    "typed", ["OLIVER@hughes.co.uk", "MESSENGER:2742085512340733", "2742085512340733", "Hughes"]
)
def test_search_finds_a_contact_by_email_chat_id_or_name(admin_client, make_contact, typed):
    make_contact(
        "Oliver Hughes",
        emails=["oliver@hughes.co.uk"],
        chat_ids=[("MESSENGER", "2742085512340733")],
    )
    make_contact("Somebody Else", emails=["else@example.com"])
    response = admin_client.get(CHANGELIST, {"q": typed})
    assert [c.name for c in response.context["cl"].result_list] == ["Oliver Hughes"]


# --- Shared identifiers: filter and report ----------------------------------


@pytest.fixture
def households(make_contact):
    return {
        "erik": make_contact("Erik Lindqvist", country="SE", phones=["08-123 456 78"]),
        "karin": make_contact("Karin Lindqvist", country="SE", phones=["+46812345678"]),
        "lars": make_contact("Lars Berg", emails=["support@nordicbikes.se"]),
        "sofia": make_contact("Sofia Ek", emails=["SUPPORT@nordicbikes.se"]),
        "ada": make_contact("Ada Alone", emails=["ada@example.com"], phones=["+46701234567"]),
        "tg1": make_contact("Tele One", chat_ids=[("TELEGRAM", "42")]),
        "tg2": make_contact("Tele Two", chat_ids=[("TELEGRAM", "42")]),
        "viber": make_contact("Viber Only", chat_ids=[("VIBER", "42")]),  # other channel
    }


def test_the_shared_filter_lists_only_contacts_sharing_an_identifier(admin_client, households):
    response = admin_client.get(CHANGELIST, {"shared": "yes"})
    names = sorted(c.name for c in response.context["cl"].result_list)
    assert names == [
        "Erik Lindqvist",
        "Karin Lindqvist",
        "Lars Berg",
        "Sofia Ek",
        "Tele One",
        "Tele Two",
    ]


def test_the_report_lists_every_shared_identifier_with_its_holders(admin_client, households):
    response = admin_client.get(reverse("admin:directory_contact_shared"))
    page = response.content.decode()
    assert response.status_code == 200
    assert response.context["total"] == 3
    rows = {
        item.label: sorted(c.name for c in item.contacts) for item in response.context["shared"]
    }
    assert rows == {
        "+46812345678": ["Erik Lindqvist", "Karin Lindqvist"],
        "support@nordicbikes.se": ["Lars Berg", "Sofia Ek"],
        "TELEGRAM:42": ["Tele One", "Tele Two"],
    }
    assert "Ada Alone" not in page
    assert reverse("admin:directory_contact_change", args=[households["erik"].pk]) in page


def test_the_changelist_links_to_the_report_import_and_export(admin_client, households):
    page = admin_client.get(CHANGELIST).content.decode()
    for name in ("shared", "import", "export"):
        assert reverse(f"admin:directory_contact_{name}") in page


# --- Merge --------------------------------------------------------------------


def test_merge_keeps_one_contact_moves_identifiers_and_logs_it(admin_client, make_contact):
    keep = make_contact("Anna Svensson", emails=["anna@example.com"], phones=["+46701234567"])
    twin = make_contact(
        "Anna S.",
        company="Nordic Bikes AB",
        external_id="CRM-9",
        emails=["ANNA@example.com", "anna@work.example"],
        phones=["+46701234567", "+46812345678"],
        chat_ids=[("MESSENGER", "27420")],
    )
    bystander = make_contact("Someone Else", emails=["else@example.com"])
    selection = {"action": "merge_contacts", "_selected_action": [keep.pk, twin.pk]}

    confirm_page = admin_client.post(CHANGELIST, selection)
    assert confirm_page.status_code == 200
    assert "Keep this contact" in confirm_page.content.decode()
    assert Contact.objects.count() == 3  # nothing happens before confirmation

    response = admin_client.post(CHANGELIST, selection | {"confirm": "yes", "keep": keep.pk})
    assert response.status_code == 302
    assert set(Contact.objects.values_list("pk", flat=True)) == {keep.pk, bystander.pk}
    keep.refresh_from_db()
    assert sorted(keep.emails.values_list("value", flat=True)) == [
        "anna@example.com",
        "anna@work.example",
    ]
    assert sorted(str(p.value) for p in keep.phones.all()) == ["+46701234567", "+46812345678"]
    assert list(keep.chat_ids.values_list("channel", "value")) == [("MESSENGER", "27420")]
    assert (keep.company, keep.external_id) == ("Nordic Bikes AB", "CRM-9")
    change = LogEntry.objects.get(action_flag=CHANGE, object_id=str(keep.pk))
    assert "Merged Anna S." in change.get_change_message()
    assert LogEntry.objects.filter(action_flag=DELETION, object_id=str(twin.pk)).exists()


def test_merge_needs_two_contacts(admin_client, make_contact):
    only = make_contact("Alone")
    response = admin_client.post(
        CHANGELIST, {"action": "merge_contacts", "_selected_action": [only.pk]}, follow=True
    )
    assert "Select at least two contacts" in response.content.decode()
    assert Contact.objects.count() == 1


# --- Who may do what ------------------------------------------------------------


def test_an_agent_without_add_permission_cannot_import(client, agent):
    client.force_login(agent)
    assert client.get(reverse("admin:directory_contact_import")).status_code == 403


def test_a_staff_user_without_permissions_sees_no_directory(client, staff_without_permissions):
    client.force_login(staff_without_permissions)
    for name in ("changelist", "shared", "export"):
        assert client.get(reverse(f"admin:directory_contact_{name}")).status_code == 403


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get(reverse("admin:directory_contact_export"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_identifier_rows_are_deleted_with_their_contact(make_contact):
    contact = make_contact(
        "Gone", emails=["gone@example.com"], phones=["+46701234567"], chat_ids=[("LINE", "U1")]
    )
    contact.delete()
    assert not ContactEmail.objects.exists()
    assert not ContactPhone.objects.exists()
    assert not ContactChatId.objects.exists()
