"""Which rule fired, and the identification log an admin reads to answer
"why did this caller show as X?"."""

import json
import logging
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from directory.decisions import identifier_hash
from directory.identify import RULES, identify

pytestmark = pytest.mark.django_db

API_TOKEN = "api-token-never-logged-7f3e"


@pytest.fixture
def household(make_contact):
    return {
        "anna": make_contact("Anna Maria Svensson", country="SE", phones=["070-123 45 67"]),
        "erik": make_contact("Erik Lindqvist", country="SE", phones=["08-123 456 78"]),
        "karin": make_contact("Karin Lindqvist", country="SE", phones=["+46 8 123 456 78"]),
    }


@pytest.mark.parametrize(
    ("channel", "identifier", "name", "rule"),
    [
        ("voice", "anonymous", None, "withheld_caller_id"),
        ("voice", "46701234567", None, "single_holder"),
        ("voice", "+15550100999", None, "no_holder"),
        ("voice", "+46812345678", None, "shared_identifier"),
        ("WHATSAPP", "46701234567", "Anna Svensson", "single_holder+platform_name"),
        ("WHATSAPP", "+15550100999", "Someone", "no_holder+platform_name"),
        ("WHATSAPP", "+46812345678", "Karin Lindqvist", "shared_identifier+platform_name"),
        ("SMS", "46701234567", "Anna Svensson", "single_holder"),  # SMS names are only claims
    ],
)
def test_every_identity_says_which_rule_fired(household, channel, identifier, name, rule):
    identity = identify(channel=channel, identifier=identifier, name=name)
    assert identity["rule"] == rule
    assert rule in RULES


def test_the_log_hash_is_keyed_stable_and_never_the_value(settings):
    settings.CP_LOG_HASH_KEY = "key-one"
    phone = identifier_hash(kind="phone", value="+46701234567")
    assert phone == identifier_hash(kind="phone", value="+46701234567")
    assert "46701234567" not in phone
    # One customer's number hashes alike on every channel; a chat id per channel.
    assert phone == identifier_hash(kind="phone", value="+46701234567", channel="WHATSAPP")
    assert identifier_hash(kind="chat_id", value="42", channel="MESSENGER") != identifier_hash(
        kind="chat_id", value="42", channel="TELEGRAM"
    )
    assert identifier_hash(kind="phone", value=None) is None  # a withheld caller
    settings.CP_LOG_HASH_KEY = "key-two"
    assert identifier_hash(kind="phone", value="+46701234567") != phone


def test_an_api_identification_is_logged_once_without_the_identifier_or_the_token(
    client, household, settings, caplog
):
    settings.CP_API_TOKEN = API_TOKEN
    caplog.set_level(logging.DEBUG)
    response = client.post(
        "/api/identify",
        json.dumps({"channel": "voice", "identifier": "+46 8 123 456 78"}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert response.status_code == 200
    decisions = [r for r in caplog.records if r.name == "cpweb.identification"]
    assert len(decisions) == 1
    logged = json.loads(decisions[0].getMessage())
    assert logged == decisions[0].identification
    assert logged == {
        "event": "identification",
        "trigger": "api",
        "conversation_id": None,
        "channel": "voice",
        "kind": "phone",
        "identifier_hash": identifier_hash(kind="phone", value="+46812345678"),
        "status": "ambiguous",
        "rule": "shared_identifier",
        "name_source": "identifier",
        "verified": False,
        "contact_id": None,
        "candidate_ids": sorted([household["erik"].pk, household["karin"].pk]),
        "candidates_total": 2,
        "possible_match_id": None,
    }
    everything = "\n".join(record.getMessage() for record in caplog.records)
    for secret in ("46812345678", "8 123 456 78", API_TOKEN, "Lindqvist"):
        assert secret not in everything


def test_the_admin_finds_a_callers_decisions_by_their_hash(household, caplog, client, settings):
    settings.CP_API_TOKEN = API_TOKEN
    caplog.set_level(logging.INFO, logger="cpweb.identification")
    for number in ("+46 70 123 45 67", "+15550100999", "0046701234567"):
        client.post(
            "/api/identify",
            json.dumps({"channel": "voice", "identifier": number}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
    out = StringIO()
    call_command("identifier_hash", "0046 70-123 45 67", channel="voice", stdout=out)
    digest = out.getvalue().split("\t")[0]
    found = [r.identification for r in caplog.records if digest in r.getMessage()]
    assert [(d["status"], d["contact_id"]) for d in found] == [
        ("matched", household["anna"].pk),
        ("matched", household["anna"].pk),
    ]


def test_the_hash_command_explains_a_bad_identifier():
    with pytest.raises(CommandError, match="not a phone number"):
        call_command("identifier_hash", "no number", channel="voice")
    with pytest.raises(CommandError, match="not a channel"):
        call_command("identifier_hash", "x", channel="FAX")


def test_json_log_lines_carry_the_decision_as_keys(household):
    from cpweb.logs import JsonFormatter

    record = logging.LogRecord("cpweb.identification", logging.INFO, __file__, 1, "{}", (), None)
    record.identification = {"event": "identification", "status": "matched"}
    line = json.loads(JsonFormatter().format(record))
    assert line["logger"] == "cpweb.identification"
    assert (line["event"], line["status"]) == ("identification", "matched")
    plain = logging.LogRecord("chat", logging.WARNING, __file__, 1, "hub: %s", ("down",), None)
    assert json.loads(JsonFormatter().format(plain))["message"] == "hub: down"
