"""A visitor and an agent in a real browser (Debian's Chromium driven by Playwright).

Screenshots of every page go to test-results/screenshots/ (CPWEB_TEST_OUTPUT).
"""

import re
from datetime import date, timedelta

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import ADMIN, AGENT, OUTPUT

CHROMIUM = "/usr/bin/chromium"
SHOTS = OUTPUT / "screenshots"
# CI machines are shared and slow at times: wait up to 15 s for what a user would see.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        yield browser
        browser.close()


def _page(browser: Browser) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    return page


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _agent_console(browser: Browser, server) -> Page:
    agent = _page(browser)
    agent.goto(f"{server.base_url}/console/")
    expect(agent).to_have_url(re.compile(r"/accounts/login/"))
    _shot(agent, "login")
    agent.get_by_label("Username").fill(AGENT[0])
    agent.get_by_label("Password").fill(AGENT[1])
    agent.get_by_role("button", name="Sign in").click()
    expect(agent).to_have_url(re.compile(r"/console/$"))
    expect(agent.locator("#connection")).to_have_text("Live")
    return agent


def _open_chat(browser: Browser, server, email: str, name: str = "") -> Page:
    visitor = _page(browser)
    visitor.goto(f"{server.base_url}/")
    visitor.get_by_role("button", name="Chat with us").click()
    visitor.get_by_label("Email").fill(email)
    if name:
        visitor.get_by_label("Name (optional)").fill(name)
    visitor.get_by_role("button", name="Start chat").click()
    expect(visitor.get_by_label("Message")).to_be_visible()
    return visitor


def test_the_agent_sees_the_visitors_name_and_they_talk(browser, server):
    agent = _agent_console(browser, server)
    visitor = _open_chat(browser, server, "amelia.clarke@example.co.uk", name="Amelia")
    visitor.get_by_label("Message").fill("Hi, where is my parcel?")
    visitor.get_by_role("button", name="Send").click()
    expect(visitor.get_by_role("log", name="Conversation")).to_contain_text(
        "Hi, where is my parcel?"
    )
    _shot(visitor, "widget-chat")

    entry = agent.locator(".conversation-list button", has_text="Amelia Clarke")
    expect(entry).to_be_visible()
    expect(entry).to_contain_text("matched")
    entry.click()
    expect(agent.locator(".headline")).to_have_text("Amelia Clarke")
    expect(agent.locator(".badges")).to_contain_text("matched")
    expect(agent.locator(".badges")).to_contain_text("unverified")
    expect(agent.locator(".extension")).to_contain_text("Says they are: Amelia")
    expect(agent.get_by_role("link", name="Amelia Clarke")).to_have_attribute(
        "href", re.compile(r"/admin/directory/contact/\d+/change/")
    )
    thread = agent.get_by_role("log", name="Messages")
    expect(thread).to_contain_text("Hi, where is my parcel?")
    agent.get_by_label("Reply").fill("It left our warehouse this morning.")
    agent.get_by_role("button", name="Send reply").click()
    expect(thread).to_contain_text("It left our warehouse this morning.")
    _shot(agent, "console")

    expect(visitor.get_by_role("log", name="Conversation")).to_contain_text(
        "It left our warehouse this morning."
    )
    _shot(visitor, "widget-reply")


def test_an_unmatched_and_a_shared_identifier_on_the_console(browser, server):
    agent = _agent_console(browser, server)
    _open_chat(browser, server, "first.timer@example.org")
    stranger = agent.locator(".conversation-list button", has_text="first.timer@example.org")
    expect(stranger).to_contain_text("not in directory")
    stranger.click()
    add = agent.get_by_role("link", name="Add to directory")
    expect(add).to_have_attribute("href", re.compile(r"/admin/directory/contact/add/\?email="))

    _open_chat(browser, server, "support@nordicbikes.se")
    shared = agent.locator(".conversation-list button", has_text="support@nordicbikes.se")
    expect(shared).to_contain_text("several contacts (2)")
    shared.click()
    expect(agent.locator(".extension")).to_contain_text("Shared by 2 contacts")
    expect(agent.locator(".extension .candidates")).to_contain_text("Lars Berg")
    expect(agent.locator(".extension .candidates")).to_contain_text("Sofia Ek")
    _shot(agent, "console-ambiguous")


def test_the_pre_chat_form_explains_a_bad_email(browser, server):
    visitor = _page(browser)
    visitor.goto(f"{server.base_url}/")
    launcher = visitor.get_by_role("button", name="Chat with us")
    launcher.focus()
    visitor.keyboard.press("Enter")
    email = visitor.get_by_label("Email")
    expect(email).to_be_focused()
    email.fill("not an email")
    visitor.keyboard.press("Enter")
    expect(visitor.get_by_role("alert")).to_contain_text("valid email address")
    expect(email).to_have_attribute("aria-invalid", "true")
    _shot(visitor, "widget-invalid-email")
    visitor.keyboard.press("Escape")
    expect(launcher).to_be_focused()
    expect(launcher).to_have_attribute("aria-expanded", "false")


def test_names_and_messages_are_shown_as_text_never_run(browser, server):
    agent = _agent_console(browser, server)
    payload = '<img src=x onerror="window.__pwned=1">'
    visitor = _open_chat(browser, server, "xss.test@example.org", name=payload)
    visitor.get_by_label("Message").fill(payload)
    visitor.get_by_role("button", name="Send").click()
    agent.locator(".conversation-list button", has_text="xss.test@example.org").click()
    expect(agent.get_by_role("log", name="Messages")).to_contain_text(payload)
    expect(agent.locator(".extension")).to_contain_text(payload)
    assert agent.evaluate("window.__pwned") is None
    assert agent.locator(".thread img, .extension img").count() == 0


def test_the_widget_resumes_after_a_reload(browser, server):
    visitor = _open_chat(browser, server, "reloader@example.org")
    visitor.get_by_label("Message").fill("before the reload")
    visitor.get_by_role("button", name="Send").click()
    log = visitor.get_by_role("log", name="Conversation")
    expect(log.locator(".meta", has_text="You")).to_have_count(1)  # acknowledged
    visitor.reload()
    expect(visitor.get_by_role("dialog", name="Chat with us")).to_be_visible()
    expect(log).to_contain_text("before the reload")
    expect(log.locator("li")).to_have_count(1)


# --- Identification insights in admin -------------------------------------------------

# Ended conversations started N days ago, as the admin page counts them.
INSIGHTS_HISTORY = """
from datetime import timedelta
from django.utils import timezone
from chat.models import Conversation
from chat.services import conversation_end, conversation_start
now = timezone.now()
plan = [
    (1, "webchat", "anna.svensson@nordicbikes.se"), (1, "webchat", "support@nordicbikes.se"),
    (1, "webchat", "new.customer@example.org"), (1, "voice", "anonymous"),
    (1, "voice", "+46812345678"), (2, "voice", "46701234567"), (2, "voice", "+46812345678"),
    (2, "WHATSAPP", "46701234567"), (3, "MESSENGER", "2742085512340733"),
    (3, "webchat", "support@nordicbikes.se"), (5, "voice", "private"),
]
for days_ago, channel, identifier in plan:
    conversation, _ = conversation_start(channel=channel, identifier=identifier)
    conversation_end(conversation=conversation)
    Conversation.objects.filter(pk=conversation.pk).update(
        started_at=now - timedelta(days=days_ago)
    )
print(now.date())
"""


def test_an_admin_reads_the_identification_insights(browser, server):
    seeded = server.manage("shell", "--no-imports", "-c", INSIGHTS_HISTORY)
    today = date.fromisoformat(seeded.stdout.strip())
    yesterday, two_days_ago = today - timedelta(days=1), today - timedelta(days=2)
    admin = _page(browser)
    admin.set_viewport_size({"width": 1400, "height": 900})
    admin.goto(f"{server.base_url}/admin/")
    admin.get_by_label("Username").fill(ADMIN[0])
    admin.get_by_label("Password").fill(ADMIN[1])
    admin.get_by_role("button", name="Log in").click()
    admin.get_by_role("link", name="Identification insights").click()
    expect(admin).to_have_url(re.compile(r"/admin/insights/$"))
    expect(admin.get_by_role("heading", name="Totals by channel")).to_be_visible()

    # One chart for all channels and one per channel, drawn with bars for the seeded days.
    charts = admin.locator("svg.insights-chart")
    expect(charts.first).to_be_visible()
    assert charts.count() >= 4  # all, webchat, voice, WHATSAPP, MESSENGER (+ today's tests)
    box = charts.first.bounding_box()
    assert box and box["width"] > 500 and box["height"] > 100
    voice = admin.locator("#channel-voice")
    bar_titles = voice.locator("g.bar > title").all_text_contents()
    assert f"{two_days_ago}: 1 matched, 1 ambiguous" in bar_titles
    # The same numbers as a table, behind a disclosure.
    voice.get_by_text("Table: voice per day").click()
    row = voice.locator("tr", has=admin.locator("th", has_text=str(yesterday)))
    expect(row.locator("td")).to_have_text(["0", "0", "1", "1", "2"])

    shared = admin.locator("#ambiguous-identifiers")
    expect(shared).to_contain_text("support@nordicbikes.se")
    expect(shared).to_contain_text("+46812345678")
    _shot(admin, "admin-insights")

    shared.get_by_role("link", name="+46812345678").click()
    expect(admin.locator("#result_list")).to_contain_text("Erik Lindqvist")
    expect(admin.locator("#result_list")).to_contain_text("Karin Lindqvist")


# --- CRM-integrated mode: the console inside the CRM's page ------------------------

CRM_PAGE = """<!doctype html><title>CRM</title>
<script>
  window.handoffs = [];
  window.addEventListener("message", function (event) {
    window.handoffs.push({origin: event.origin, data: event.data});
  });
</script>
<iframe id="panel" src="%s/console/" style="width:1200px;height:700px"></iframe>"""


def test_a_console_framed_by_the_crm_posts_each_hand_off_to_the_crm_origin(
    browser, crm_server, crm
):
    # Signed in first: the CRM frame then gets the session (same site, other port).
    agent = _page(browser)
    agent.goto(f"{crm_server.base_url}/accounts/login/")
    agent.get_by_label("Username").fill(AGENT[0])
    agent.get_by_label("Password").fill(AGENT[1])
    agent.get_by_role("button", name="Sign in").click()
    expect(agent).to_have_url(re.compile(r"/console/$"))

    crm.pages["/crm"] = CRM_PAGE % crm_server.base_url
    agent.goto(f"{crm.origin}/crm")
    panel = agent.frame_locator("#panel")
    expect(panel.locator("#connection")).to_have_text("Live")

    _open_chat(browser, crm_server, "oliver.hughes@example.co.uk")
    entry = panel.locator(".conversation-list button", has_text="CRM customer oliver.hughes")
    expect(entry).to_contain_text("name from CRM")
    entry.click()
    expect(panel.locator(".headline")).to_have_text("CRM customer oliver.hughes@example.co.uk")
    pop = panel.get_by_role("link", name="Open in CRM")
    expect(pop).to_have_attribute(
        "href", "https://crm.example/search?email=oliver.hughes%40example.co.uk"
    )
    record = panel.get_by_role("link", name="CRM record")
    expect(record).to_have_attribute("href", "https://crm.example/r/oliver.hughes@example.co.uk")
    _shot(agent, "console-in-crm-frame")

    handoffs = agent.evaluate("window.handoffs")
    mine = [h for h in handoffs if h["data"]["crm"]["value"] == "oliver.hughes@example.co.uk"]
    assert [h["data"]["event"] for h in mine] == ["identified", "updated"]
    assert {h["origin"] for h in mine} == {crm_server.origin}
    assert mine[0]["data"]["type"] == "cpweb.identity"
    assert mine[0]["data"]["crm"] == {"kind": "email", "value": "oliver.hughes@example.co.uk"}
    assert mine[1]["data"]["name_source"] == "crm"
