"""``POST /api/identify``: the identification engine over HTTP (SPEC §5)."""

import json

import pytest
from django.test import override_settings

from directory.identify import webchat_identity_hash

URL = "/api/identify"
TOKEN = "test-token-0123456789"
SPEC_FIELDS = {
    "status", "display_name", "name_source", "identifier", "contact", "candidates",
    "possible_match", "claimed_name", "verified",
}  # fmt: skip

pytestmark = pytest.mark.usefixtures("configured")


@pytest.fixture
def configured(settings):
    settings.CP_API_TOKEN = TOKEN
    settings.WEBCHAT_IDENTITY_SECRET = "host-site-secret"


def _post(client, body, token=TOKEN, content_type="application/json"):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(URL, data, content_type=content_type, headers=headers)


def test_an_integrator_asks_who_a_caller_is(client, make_contact):
    anna = make_contact("Anna Svensson", country="SE", phones=["070-123 45 67"])
    response = _post(client, {"channel": "voice", "identifier": "46701234567"})
    assert response.status_code == 200
    identity = response.json()
    assert identity.keys() >= SPEC_FIELDS
    assert identity["status"] == "matched"
    assert identity["contact"]["id"] == anna.pk
    assert identity["display_name"] == "Anna Svensson"
    assert identity["identifier"] == {
        "channel": "voice", "kind": "phone", "raw": "46701234567", "value": "+46701234567",
    }  # fmt: skip
    assert identity["reason"]


def test_a_platform_name_is_passed_along(client, make_contact):
    make_contact("Anna Maria Svensson", phones=["+46701234567"])
    response = _post(
        client, {"channel": "WHATSAPP", "identifier": "46701234567", "name": "Anna Svensson"}
    )
    identity = response.json()
    assert identity["display_name"] == "Anna Svensson"
    assert "middle name" in identity["possible_match"]["reason"]


@pytest.mark.parametrize("token", [None, "", "wrong-token", TOKEN + "x"])
def test_a_missing_or_wrong_token_is_refused(client, token):
    response = _post(client, {"channel": "voice", "identifier": "46701234567"}, token=token)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized"


def test_the_endpoint_is_off_until_a_token_is_configured(client, settings):
    settings.CP_API_TOKEN = ""
    response = _post(client, {"channel": "voice", "identifier": "46701234567"}, token="")
    assert response.status_code == 503
    assert "CP_API_TOKEN" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        ("[1, 2]", "invalid_request"),
        ({"identifier": "a@example.com"}, "invalid_request"),
        ({"channel": "webchat"}, "invalid_request"),
        ({"channel": "webchat", "identifier": 42}, "invalid_request"),
        ({"channel": "webchat", "identifier": "a@example.com", "name": ["x"]}, "invalid_request"),
        ({"channel": "webchat", "identifier": "not-an-email"}, "invalid_email"),
        ({"channel": "voice", "identifier": "12"}, "invalid_phone"),
        ({"channel": "MESSENGER", "identifier": " "}, "invalid_chat_id"),
        ({"channel": "fax", "identifier": "+46701234567"}, "unknown_channel"),
    ],
)
def test_bad_requests_get_a_400_with_a_code_and_a_reason(client, db, body, code):
    response = _post(client, body)
    assert response.status_code == 400
    assert response.json()["error"] == code
    assert response.json()["message"]


def test_an_oversized_body_is_refused(client, db):
    response = _post(client, {"channel": "webchat", "identifier": "a" * 20_000 + "@example.com"})
    assert response.status_code == 413


def test_only_post_is_allowed(client):
    assert client.get(URL, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


def test_a_valid_identity_hash_marks_a_web_chat_email_verified(client, make_contact):
    make_contact("Anna Svensson", emails=["anna@example.com"])
    proof = webchat_identity_hash("anna@example.com")
    body = {"channel": "webchat", "identifier": "Anna@Example.com", "identity_hash": proof}
    assert _post(client, body).json()["verified"] is True


def test_a_forged_identity_hash_is_refused(client, make_contact):
    make_contact("Anna Svensson", emails=["anna@example.com"])
    body = {"channel": "webchat", "identifier": "anna@example.com", "identity_hash": "00" * 32}
    response = _post(client, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_identity_hash"


@override_settings(CP_MODE="crm")
def test_crm_mode_adds_the_crm_block(client, db):
    body = {"channel": "MESSENGER", "identifier": "2742085512340733"}
    assert _post(client, body).json()["crm"] == {
        "kind": "chat_id",
        "value": "2742085512340733@facebook.com",
    }
