"""The identification insights admin page, through the test client as an admin uses it."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from bs4 import BeautifulSoup
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from chat.charts import PLOT_HEIGHT
from chat.models import Conversation
from chat.services import conversation_start
from directory.models import Contact
from directory.services import contact_merge

INSIGHTS = reverse("admin-insights")
MARCH = {"first": "2026-03-01", "last": "2026-03-03", "tz": "UTC"}

pytestmark = pytest.mark.django_db


def _started(channel: str, identifier: str, at: datetime, name: str | None = None) -> Conversation:
    conversation, _ = conversation_start(channel=channel, identifier=identifier, name=name)
    Conversation.objects.filter(pk=conversation.pk).update(started_at=at)
    return conversation


def _at(day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def directory(make_contact):
    anna = make_contact("Anna Svensson", emails=["anna@example.com"], phones=["+46701234567"])
    make_contact("Support One", emails=["support@example.com"], phones=["+46812345678"])
    make_contact("Support Two", emails=["support@example.com"], phones=["+46812345678"])
    make_contact("Page A", chat_ids=[("MESSENGER", "2742085512340733")])
    make_contact("Page B", chat_ids=[("MESSENGER", "2742085512340733")])
    return anna


@pytest.fixture
def march(directory):
    """Conversations over three days of March on web chat, voice, WhatsApp and Messenger."""
    # 1 March: web chat 2 matched, 1 unmatched, 2 ambiguous; voice 1 withheld, 1 ambiguous.
    _started("webchat", "anna@example.com", _at(1, 9))
    _started("webchat", "Anna@Example.com", _at(1, 10))
    _started("webchat", "someone@else.example", _at(1, 11))
    _started("webchat", "support@example.com", _at(1, 12))
    _started("webchat", "SUPPORT@example.com", _at(1, 13))
    _started("voice", "anonymous", _at(1, 14))
    _started("voice", "46812345678", _at(1, 15))
    # 2 March: voice 1 matched, 1 unmatched; WhatsApp 1 ambiguous (same number as the voice call).
    _started("voice", "+46701234567", _at(2, 8))
    _started("voice", "+14155550123", _at(2, 9))
    _started("WHATSAPP", "46812345678", _at(2, 10), name="Support")
    # 3 March: Messenger 1 ambiguous, web chat 1 unmatched (a minute before midnight).
    _started("MESSENGER", "2742085512340733", _at(3, 8))
    _started("webchat", "nobody@example.org", _at(3, 23, 59))
    # Outside the range on both sides.
    _started("webchat", "anna@example.com", _at(1) - timedelta(days=1))
    _started("webchat", "anna@example.com", _at(4, 0, 0))


@pytest.fixture
def supervisor(db) -> User:
    """A staff user allowed to see the insights and the contacts."""
    user = User.objects.create_user("supervisor", password="supervisor-pass-123", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_identification_insights"),
        Permission.objects.get(codename="view_contact"),
    )
    return user


@pytest.fixture
def supervisor_client(client, supervisor):
    client.force_login(supervisor)
    return client


def _page(client, **params) -> BeautifulSoup:
    response = client.get(INSIGHTS, params)
    assert response.status_code == 200
    return BeautifulSoup(response.content, "html.parser")


def _totals(page: BeautifulSoup) -> dict[str, dict[str, int]]:
    table = page.find(id="insights-totals")
    return {
        row["data-channel"]: {cell["data-status"]: int(cell.text) for cell in row("td")[:-1]}
        for row in table.select("tr[data-channel]")
    }


def _days(page: BeautifulSoup, channel: str) -> dict[str, dict[str, int]]:
    table = page.find(id=f"days-{channel.lower().replace(' ', '-')}")
    return {
        row.th.text: {cell["data-status"]: int(cell.text) for cell in row("td")[:-1]}
        for row in table.tbody("tr")
    }


def _contacts(*names: str) -> list[Contact]:
    return [Contact.objects.get(name=name) for name in names]


def _counts(matched=0, unmatched=0, ambiguous=0, withheld=0) -> dict[str, int]:
    return {
        "matched": matched,
        "unmatched": unmatched,
        "ambiguous": ambiguous,
        "withheld": withheld,
    }


# --- The numbers -----------------------------------------------------------------


def test_totals_per_channel_count_each_status_in_the_range(supervisor_client, march):
    page = _page(supervisor_client, **MARCH)
    assert _totals(page) == {
        "webchat": _counts(matched=2, unmatched=2, ambiguous=2),
        "voice": _counts(matched=1, unmatched=1, ambiguous=1, withheld=1),
        "WHATSAPP": _counts(ambiguous=1),
        "MESSENGER": _counts(ambiguous=1),
        "all": _counts(matched=3, unmatched=3, ambiguous=5, withheld=1),
    }
    # Busiest channel first.
    assert [row["data-channel"] for row in page.select("#insights-totals tbody tr")] == [
        "webchat",
        "voice",
        "MESSENGER",
        "WHATSAPP",
    ]


def test_each_channel_has_a_row_per_day_zeros_included(supervisor_client, march):
    page = _page(supervisor_client, **MARCH)
    assert _days(page, "voice") == {
        "2026-03-01": _counts(ambiguous=1, withheld=1),
        "2026-03-02": _counts(matched=1, unmatched=1),
        "2026-03-03": _counts(),
    }
    assert _days(page, "webchat") == {
        "2026-03-01": _counts(matched=2, unmatched=1, ambiguous=2),
        "2026-03-02": _counts(),
        "2026-03-03": _counts(unmatched=1),
    }
    assert _days(page, "all channels")["2026-03-02"] == _counts(matched=1, unmatched=1, ambiguous=1)


def test_the_chart_draws_the_same_numbers(supervisor_client, march):
    page = _page(supervisor_client, **MARCH)
    section = page.find(id="channel-webchat")
    chart = section.find("svg")
    assert chart["role"] == "img"
    assert "2 matched, 2 unmatched, 2 ambiguous, 0 withheld" in chart["aria-label"]
    bars = chart.select("g.bar")
    assert len(bars) == 3  # one per day
    first_day = {rect["data-status"]: int(rect["data-count"]) for rect in bars[0]("rect")}
    assert first_day == {"matched": 2, "unmatched": 1, "ambiguous": 2}
    assert bars[1]("rect") == []
    # Taller for more conversations: the busiest day's stack reaches the top of the axis.
    heights = [sum(float(r["height"]) for r in bar("rect")) for bar in bars]
    assert heights[0] == pytest.approx(PLOT_HEIGHT, abs=0.05)
    assert heights[2] == pytest.approx(PLOT_HEIGHT / 5, abs=0.05)
    assert bars[0].title.text == "2026-03-01: 2 matched, 1 unmatched, 2 ambiguous"
    # Nothing fetched from elsewhere: the admin's own scripts only.
    assert all(script["src"].startswith("/static/admin/") for script in page("script"))


def test_days_are_cut_in_the_chosen_time_zone(supervisor_client, directory):
    # 23:30 UTC on 1 March is already 2 March in Stockholm (UTC+1).
    _started("webchat", "anna@example.com", _at(1, 23, 30))
    in_utc = _days(_page(supervisor_client, **MARCH), "webchat")
    assert in_utc["2026-03-01"]["matched"] == 1
    assert in_utc["2026-03-02"]["matched"] == 0
    in_stockholm = _days(_page(supervisor_client, **MARCH | {"tz": "Europe/Stockholm"}), "webchat")
    assert in_stockholm["2026-03-01"]["matched"] == 0
    assert in_stockholm["2026-03-02"]["matched"] == 1


def test_a_day_across_a_daylight_saving_change_is_counted_whole(supervisor_client, directory):
    # 29 March 2026 in Stockholm has 23 hours: 00:00 CET (23:00 UTC on the 28th) to 00:00 CEST.
    _started("voice", "+46701234567", datetime(2026, 3, 28, 23, 0, tzinfo=UTC))
    _started("voice", "+46701234567", datetime(2026, 3, 29, 21, 59, tzinfo=UTC))
    _started("voice", "+46701234567", datetime(2026, 3, 29, 22, 0, tzinfo=UTC))  # the 30th
    page = _page(supervisor_client, first="2026-03-29", last="2026-03-29", tz="Europe/Stockholm")
    assert _days(page, "voice") == {"2026-03-29": _counts(matched=2)}


def test_the_default_range_is_the_last_30_days(supervisor_client, directory):
    now = timezone.now()
    _started("webchat", "anna@example.com", now)
    _started("webchat", "anna@example.com", now - timedelta(days=29))
    _started("webchat", "anna@example.com", now - timedelta(days=31))
    page = _page(supervisor_client)
    assert _totals(page)["webchat"] == _counts(matched=2)
    assert len(page.find(id="days-webchat").tbody("tr")) == 30


def test_a_conversation_reidentified_after_a_directory_fix_counts_as_it_is_now(
    supervisor_client, directory, django_capture_on_commit_callbacks
):
    _started("webchat", "support@example.com", timezone.now())
    assert _totals(_page(supervisor_client))["webchat"] == _counts(ambiguous=1)
    one, two = _contacts("Support One", "Support Two")
    with django_capture_on_commit_callbacks(execute=True):
        contact_merge(keep=one, others=[two])  # re-identifies the open conversation
    assert _totals(_page(supervisor_client))["webchat"] == _counts(matched=1)


def test_an_empty_range_says_so(supervisor_client, march):
    page = _page(supervisor_client, first="2025-01-01", last="2025-01-31", tz="UTC")
    assert "No conversations started in this range." in page.find(id="insights-totals").text
    assert page.find("svg", class_="insights-chart") is None


# --- The shared identifiers behind ambiguity ----------------------------------------


def _ambiguous(page: BeautifulSoup) -> list[tuple[str, str, int, str]]:
    return [
        (row("td")[0].text, row("td")[1].text, int(row("td")[2].text), row.a["href"])
        for row in page.find(id="ambiguous-identifiers").tbody("tr")
    ]


def test_shared_identifiers_are_listed_with_the_conversations_they_made_ambiguous(
    supervisor_client, march
):
    page = _page(supervisor_client, **MARCH)
    changelist = reverse("admin:directory_contact_changelist")
    assert _ambiguous(page) == [
        # The number rang on voice and wrote on WhatsApp: one identifier to clean up.
        ("support@example.com", "2", 2, f"{changelist}?q=support%40example.com"),
        ("+46812345678", "2", 2, f"{changelist}?q=%2B46812345678"),
        ("MESSENGER:2742085512340733", "2", 1, f"{changelist}?q=MESSENGER%3A2742085512340733"),
    ]
    assert page.find("a", href=reverse("admin:directory_contact_shared"))


def test_the_contact_link_finds_the_contacts_sharing_the_identifier(supervisor_client, march):
    page = _page(supervisor_client, **MARCH)
    href = page.find(id="ambiguous-identifiers").find("a", string="+46812345678")["href"]
    contacts = supervisor_client.get(href).content.decode()
    assert "Support One" in contacts
    assert "Support Two" in contacts
    assert "Anna Svensson" not in contacts


def test_a_shared_identifier_since_cleaned_up_shows_as_resolved(supervisor_client, march):
    one, two = _contacts("Support One", "Support Two")
    contact_merge(keep=one, others=[two])  # the conversations have ended or not: still counted
    rows = _ambiguous(_page(supervisor_client, **MARCH))
    assert ("support@example.com", "1 (resolved)", 2) in [row[:3] for row in rows]


def test_the_page_costs_the_same_queries_however_many_conversations(
    supervisor_client, directory, django_assert_max_num_queries
):
    for day in (1, 2, 3):
        _started("webchat", "support@example.com", _at(day))
        _started("MESSENGER", "2742085512340733", _at(day))
    with django_assert_max_num_queries(12):
        _page(supervisor_client, **MARCH)
    for day in (1, 2, 3):
        for hour in range(10):
            _started("webchat", f"support{hour}@example.com", _at(day, hour))
            _started("voice", f"+4681234{day}{hour:03d}", _at(day, hour))
    with django_assert_max_num_queries(12):
        _page(supervisor_client, **MARCH)


# --- Bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"first": "2026-03-05", "last": "2026-03-01"}, "The first day must not be after the last"),
        ({"first": "2024-01-01", "last": "2026-03-01"}, "Pick at most 366 days."),
        ({"first": "yesterday"}, "Enter a valid date."),
        ({"tz": "Mars/Olympus_Mons"}, "Select a valid choice."),
    ],
)
def test_a_bad_range_is_explained_and_the_default_shown(
    supervisor_client, directory, params, message
):
    _started("webchat", "anna@example.com", timezone.now())
    page = _page(supervisor_client, **params)
    assert message in page.find(class_="errorlist").text
    assert "Showing the default range instead." in page.text
    assert _totals(page)["webchat"] == _counts(matched=1)


# --- Who may see it --------------------------------------------------------------------


def test_anonymous_users_are_sent_to_the_admin_login(client):
    response = client.get(INSIGHTS)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_a_user_with_the_permission_but_not_staff_is_sent_to_login(client, db):
    user = User.objects.create_user("outsider", password="outsider-pass-123")
    user.user_permissions.add(Permission.objects.get(codename="view_identification_insights"))
    client.force_login(user)
    response = client.get(INSIGHTS)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_the_permission_are_refused(client, staff_without_permissions, agent):
    for user in (staff_without_permissions, agent):  # an agent watches consoles, no more
        client.force_login(user)
        assert client.get(INSIGHTS).status_code == 403
        index = client.get(reverse("admin:index")).content.decode()
        assert INSIGHTS not in index


def test_the_admin_index_links_to_the_page_for_those_allowed(admin_client, supervisor_client):
    for allowed in (admin_client, supervisor_client):
        index = BeautifulSoup(allowed.get(reverse("admin:index")).content, "html.parser")
        link = index.find("a", string="Identification insights")
        assert link["href"] == INSIGHTS


def test_without_permission_to_view_contacts_the_identifiers_are_not_listed(client, march):
    user = User.objects.create_user("analyst", password="analyst-pass-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_identification_insights"))
    client.force_login(user)
    page = _page(client, **MARCH)
    assert _totals(page)["all"] == _counts(matched=3, unmatched=3, ambiguous=5, withheld=1)
    assert page.find(id="ambiguous-identifiers") is None
    assert "support@example.com" not in page.decode()
    assert "needs permission to view contacts" in page.text


def test_the_form_shows_the_range_on_screen(supervisor_client, settings):
    settings.TIME_ZONE = "Europe/Stockholm"
    page = _page(supervisor_client)
    today = timezone.now().astimezone(ZoneInfo("Europe/Stockholm")).date()
    assert page.find(id="id_last")["value"] == today.isoformat()
    assert page.find(id="id_first")["value"] == (today - timedelta(days=29)).isoformat()
    assert page.find(id="id_tz").find("option", selected=True)["value"] == "Europe/Stockholm"
    page = _page(supervisor_client, **MARCH)
    assert page.find(id="id_first")["value"] == "2026-03-01"
    assert page.find(id="id_tz").find("option", selected=True)["value"] == "UTC"
