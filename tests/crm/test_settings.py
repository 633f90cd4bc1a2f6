"""CRM settings fail at start-up when they could not work or would be unsafe (SPEC §7)."""

import pytest
from django.test import override_settings

from chat.events import conversation_payload
from chat.models import Conversation
from chat.services import conversation_start
from tests.test_settings import _check


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CRM_ORIGIN": "*"}, "CRM_ORIGIN"),
        ({"CRM_ORIGIN": "crm.example.com"}, "CRM_ORIGIN"),
        ({"CRM_ORIGIN": "https://crm.example.com/app"}, "CRM_ORIGIN"),
        ({"CRM_ORIGIN": "javascript:alert(1)"}, "CRM_ORIGIN"),
        ({"CRM_SCREENPOP_URL": "javascript:alert('{value}')"}, "CRM_SCREENPOP_URL"),
        ({"CRM_SCREENPOP_URL": "/search?q={value}"}, "CRM_SCREENPOP_URL"),
        ({"CRM_DELIVERY_WORKER": "cron"}, "CRM_DELIVERY_WORKER"),
        ({"CRM_WEBHOOK_TIMEOUT": "0"}, "CRM_WEBHOOK_TIMEOUT"),
        ({"CP_COOKIE_SAMESITE": "none-ish"}, "CP_COOKIE_SAMESITE"),
    ],
)
def test_bad_crm_settings_fail_at_start_up_naming_the_variable(tmp_path, env, named):
    result = _check(tmp_path, **env)
    assert result.returncode != 0
    assert named in result.stderr.splitlines()[-1]


def test_good_crm_settings_start(tmp_path):
    result = _check(
        tmp_path,
        CP_MODE="crm",
        CRM_ORIGIN="https://CRM.example.com:8443/",
        CRM_SCREENPOP_URL="https://crm.example.com/pop/{kind}/{value}",
        CRM_DELIVERY_WORKER="external",
        CRM_RETRY_MAX_SECONDS="60",
    )
    assert result.returncode == 0, result.stderr


def test_without_crm_origin_nobody_may_frame_the_console(client, agent, settings):
    settings.CRM_ORIGIN = ""
    client.force_login(agent)
    response = client.get("/console/")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" not in response


def test_with_crm_origin_only_the_crm_may_frame_the_console_and_its_login(client, agent, settings):
    settings.CRM_ORIGIN = "https://crm.example.com"
    assert client.get("/accounts/login/")["Content-Security-Policy"] == (
        "frame-ancestors 'self' https://crm.example.com"
    )
    client.force_login(agent)
    response = client.get("/console/")
    assert response["Content-Security-Policy"] == "frame-ancestors 'self' https://crm.example.com"
    assert not response.has_header("X-Frame-Options")


@pytest.mark.django_db
def test_a_conversation_identified_before_the_switch_to_crm_mode_gets_its_crm_block():
    with override_settings(CP_MODE="standalone"):
        conversation, _ = conversation_start(channel="MESSENGER", identifier="2742085512340733")
    assert "crm" not in conversation.identity
    with override_settings(CP_MODE="crm"):
        payload = conversation_payload(Conversation.objects.get())
    assert payload["identity"]["crm"] == {
        "kind": "chat_id",
        "value": "2742085512340733@facebook.com",
    }
    with override_settings(CP_MODE="standalone"):
        assert "crm" not in conversation_payload(Conversation.objects.get())["identity"]
