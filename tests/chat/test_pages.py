"""The demo site, the console page and the admin's "add to directory" form."""

import pytest
from django.urls import reverse


def test_the_demo_site_embeds_the_widget_with_one_script_tag(client):
    page = client.get("/").content.decode()
    assert '<script src="/static/chat/widget.js" data-server="http://testserver" defer>' in page


def test_the_console_asks_anonymous_users_to_sign_in(client):
    response = client.get("/console/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/console/")


def test_the_console_refuses_staff_without_the_permission(client, staff_without_permissions):
    client.force_login(staff_without_permissions)
    assert client.get("/console/").status_code == 403


def test_an_agent_gets_the_console(client, agent):
    client.force_login(agent)
    response = client.get("/console/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "console/console.js" in page
    assert '"canAddContacts": false' in page


def test_the_login_page_signs_an_agent_in_to_the_console(client, agent):
    response = client.post(
        "/accounts/login/",
        {"username": "agent", "password": "agent-pass-123", "next": "/console/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/console/"


@pytest.mark.parametrize(
    ("query", "field", "value"),
    [
        ("email=walk.in%40example.net&name=Walter", "emails-0-value", "walk.in@example.net"),
        ("phone=%2B46701234567", "phones-0-value", "+46701234567"),
        ("chat_channel=MESSENGER&chat_id=2742085512340733", "chat_ids-0-value",
         "2742085512340733"),
    ],
)  # fmt: skip
def test_add_to_directory_opens_the_admin_form_prefilled(admin_client, query, field, value):
    response = admin_client.get(f"{reverse('admin:directory_contact_add')}?{query}")
    page = response.content.decode()
    assert f'name="{field}"' in page
    assert f'value="{value}"' in page
    if "name=Walter" in query:
        assert 'value="Walter"' in page
