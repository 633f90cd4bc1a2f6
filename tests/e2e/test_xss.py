"""Untrusted names and messages never run as script: payloads in a directory
contact's name, a messaging platform's name (Sinch), an email's display name
and subject, a visitor's typed name and a chat message, shown in the agent
console and in Django admin, in the real browser. A script that ran would set
``window.__pwned``, open a dialog or log to the console."""

import json
import re
import time
import uuid

import httpx
import pytest
from playwright.sync_api import Page, expect

from chat.webhooks.signatures import conversation_signature
from tests.e2e.conftest import ADMIN, EMAIL_TOKEN, SINCH_WEBHOOK_SECRET
from tests.e2e.test_browser import _agent_console, _open_chat, _page, _shot, browser  # noqa: F401

MAIL_NAME = "<img src=x onerror=window.__pwned=4><script>window.__pwned=5</script>"
PAYLOAD = (
    "<img src=x onerror=\"window.__pwned=1;console.log('pwned')\">"
    "<script>window.__pwned=2;alert(2)</script>"
    '"><svg onload=window.__pwned=3>'
)


def _watch_for_script(page: Page) -> list[str]:
    """What a payload that ran would leave: dialogs and console messages."""
    seen: list[str] = []
    page.on("dialog", lambda dialog: (seen.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.on(
        "console",
        lambda message: (
            seen.append(f"console: {message.text}") if "pwned" in message.text else None
        ),
    )
    return seen


def _assert_nothing_ran(page: Page, seen: list[str]) -> None:
    assert page.evaluate("window.__pwned") is None
    assert seen == []
    injected = page.evaluate(
        """() => document.querySelectorAll('img[src="x"], svg[onload], [onerror]').length
           + [...document.scripts].filter(s => s.text.includes("__pwned")).length"""
    )
    assert injected == 0


def _sinch_message(server, *, identity: str, contact_id: str, text: str) -> None:
    body = json.dumps(
        {
            "app_id": "XSSAPP",
            "project_id": "5b7c830f-0000-4000-8000-000000000001",
            "message": {
                "id": uuid.uuid4().hex,
                "direction": "TO_APP",
                "contact_message": {"text_message": {"text": text}},
                "channel_identity": {
                    "channel": "WHATSAPP",
                    "identity": identity,
                    "app_id": "XSSAPP",
                },
                "conversation_id": f"CONV-{contact_id}",
                "contact_id": contact_id,
            },
        }
    ).encode()
    nonce, stamp = uuid.uuid4().hex, str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "x-sinch-webhook-signature": conversation_signature(
            SINCH_WEBHOOK_SECRET, body, nonce, stamp
        ),
        "x-sinch-webhook-signature-nonce": nonce,
        "x-sinch-webhook-signature-timestamp": stamp,
    }
    response = httpx.post(
        f"{server.base_url}/webhooks/sinch/conversation/", content=body, headers=headers, timeout=10
    )
    assert response.json() == {"status": "accepted"}, response.text


def _email(server, raw: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/webhooks/email/",
        content=raw,
        timeout=10,
        headers={"Content-Type": "message/rfc822", "Authorization": f"Bearer {EMAIL_TOKEN}"},
    )


@pytest.fixture(scope="module")
def payloads_everywhere(server, sinch_api):
    """A conversation on each channel whose untrusted text carries the payload."""
    server.manage(
        "shell",
        "-c",
        (
            "from directory.services import contact_create; "
            f"contact_create(name={PAYLOAD!r}, company={PAYLOAD!r}, "
            "emails=['xss.contact@example.org'])"
        ),
    )
    sinch_api.add_contact("E2E-XSS-WA", PAYLOAD)
    _sinch_message(server, identity="46700000991", contact_id="E2E-XSS-WA", text=PAYLOAD)
    mail = (
        f'From: "{MAIL_NAME}" <xss.mail@example.org>\r\n'
        f"Subject: {PAYLOAD}\r\nMessage-ID: <xss-{uuid.uuid4().hex}@example.org>\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{PAYLOAD}\r\n"
    ).encode()
    assert _email(server, mail).status_code == 200
    # A message so broken it is kept for an admin: its reason quotes the From header.
    assert _email(server, f"From: {PAYLOAD}\r\n\r\nbody".encode()).status_code == 400


def test_the_console_shows_every_untrusted_text_literally(
    browser,  # noqa: F811
    server,
    payloads_everywhere,
):
    agent = _agent_console(browser, server)
    seen = _watch_for_script(agent)
    visitor = _open_chat(browser, server, "xss.contact@example.org", name=PAYLOAD)
    visitor.get_by_label("Message").fill(PAYLOAD)
    visitor.get_by_role("button", name="Send").click()
    entries = agent.locator(".conversation-list button")
    # Headlines: the directory contact's name, the platform's name (once fetched).
    named = entries.filter(has_text=PAYLOAD)
    expect(named.nth(1)).to_be_visible()  # both of them
    detail = agent.locator("#conversation")
    for entry in [*named.all(), entries.filter(has_text="xss.mail@example.org").first]:
        entry.click()
        # The headline, the claimed names in the extension area, the thread.
        expect(detail).to_contain_text(PAYLOAD)
        _assert_nothing_ran(agent, seen)
    expect(agent.locator(".extension")).to_contain_text(MAIL_NAME)  # the email's display name
    thread = agent.get_by_role("log", name="Messages")
    expect(thread).to_contain_text(PAYLOAD)
    _shot(agent, "console-xss")
    _assert_nothing_ran(agent, seen)


def test_admin_shows_every_untrusted_text_literally(
    browser,  # noqa: F811
    server,
    payloads_everywhere,
):
    admin = _page(browser)
    seen = _watch_for_script(admin)
    admin.goto(f"{server.base_url}/admin/login/")
    admin.get_by_label("Username").fill(ADMIN[0])
    admin.get_by_label("Password").fill(ADMIN[1])
    admin.get_by_role("button", name="Log in").click()
    expect(admin).to_have_url(re.compile(r"/admin/$"))

    admin.goto(f"{server.base_url}/admin/directory/contact/?q=xss.contact%40example.org")
    expect(admin.locator("#result_list")).to_contain_text(PAYLOAD)
    admin.locator("#result_list a", has_text="onerror").first.click()
    expect(admin.locator("input[name=name]")).to_have_value(PAYLOAD)
    _assert_nothing_ran(admin, seen)

    admin.goto(f"{server.base_url}/admin/chat/rejectedemail/")
    row = admin.locator("#result_list tr", has_text="onerror").first
    expect(row).to_be_visible()
    row.locator("a").first.click()
    expect(admin.locator("#content")).to_contain_text("onerror")
    _shot(admin, "admin-xss")
    _assert_nothing_ran(admin, seen)
