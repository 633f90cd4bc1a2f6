"""The identification rules of SPEC §1, channel by channel, status by status."""

import pytest
from django.test import override_settings

from directory.identify import identify, webchat_identity_hash
from directory.normalize import IdentifierError


@pytest.fixture
def directory(make_contact):
    """A small directory with one contact per situation the rules distinguish."""
    return {
        "anna": make_contact(
            "Anna Maria Svensson",
            company="Nordic Bikes AB",
            country="SE",
            external_id="CRM-1",
            emails=["anna.svensson@nordicbikes.se", "anna@bücher.de"],
            phones=["070-123 45 67"],
            chat_ids=[("MESSENGER", "2742085512340733"), ("SINCH_CHAT", "sc-1")],
        ),
        "oliver": make_contact(
            "Oliver Hughes", country="GB", emails=["oliver@hughes.co.uk"], phones=["020 7946 0958"]
        ),
        "erik": make_contact("Erik Lindqvist", country="SE", phones=["08-123 456 78"]),
        "karin": make_contact(
            "Karin Lindqvist",
            country="SE",
            phones=["+46 8 123 456 78"],
            chat_ids=[("INSTAGRAM", "1784")],
        ),
        "lars": make_contact("Lars Berg", emails=["support@nordicbikes.se"]),
        "sofia": make_contact(
            "Sofia Ek", emails=["Support@NordicBikes.se"], chat_ids=[("INSTAGRAM", "1784")]
        ),
        "james": make_contact("James Carter", country="US", phones=["(202) 555-0143"]),
    }


def _ids(people):
    return [person.pk for person in people]


# --- Matched / unmatched / ambiguous, every channel -------------------------

MATCHES = [
    # channel, identifier as it arrives, who it is
    ("webchat", "Anna.Svensson@NordicBikes.SE", "anna"),
    ("webchat", "  anna@BÜCHER.de ", "anna"),
    ("webchat", "anna@xn--bcher-kva.de", "anna"),
    ("email", "OLIVER@hughes.co.uk", "oliver"),
    ("voice", "+46701234567", "anna"),
    ("voice", "46701234567", "anna"),
    ("voice", "0046701234567", "anna"),
    ("voice", "+44 20 7946 0958", "oliver"),
    ("voice", "442079460958", "oliver"),
    ("voice", "12025550143", "james"),
    ("SMS", "46701234567", "anna"),
    ("WHATSAPP", "46701234567", "anna"),
    ("WHATSAPP", "+46701234567", "anna"),
    ("RCS", "+442079460958", "oliver"),
    ("VIBERBM", "442079460958", "oliver"),
    ("MMS", "12025550143", "james"),
    ("MESSENGER", "2742085512340733", "anna"),
    ("messenger", "2742085512340733", "anna"),
    ("SINCH_CHAT", "sc-1", "anna"),
]


@pytest.mark.parametrize(("channel", "identifier", "who"), MATCHES)
def test_one_directory_match_shows_the_contacts_name(directory, channel, identifier, who):
    identity = identify(channel=channel, identifier=identifier)
    person = directory[who]
    assert identity["status"] == "matched"
    assert identity["display_name"] == person.name
    assert identity["name_source"] == "directory"
    assert identity["contact"] == {
        "id": person.pk,
        "name": person.name,
        "company": person.company,
        "external_id": person.external_id,
    }
    assert identity["candidates"] == []
    assert identity["identifier"]["raw"] == identifier
    assert "belongs to one contact" in identity["reason"]


UNMATCHED = [
    ("webchat", "Nobody@Example.com", "email", "nobody@example.com"),
    ("email", "stranger@example.org", "email", "stranger@example.org"),
    ("voice", "+4930 12345678", "phone", "+493012345678"),
    ("voice", "+15551234567", "phone", "+15551234567"),  # unassigned range, still shown
    ("SMS", "33612345678", "phone", "+33612345678"),
    ("WHATSAPP", "4915123456789", "phone", "+4915123456789"),
    ("MESSENGER", "999", "chat_id", "999"),
    ("INSTAGRAM", "2742085512340733", "chat_id", "2742085512340733"),  # a Messenger id
    ("TELEGRAM", "520012345", "chat_id", "520012345"),
    ("SINCH_CHAT", "sc-unknown", "chat_id", "sc-unknown"),
]


@pytest.mark.parametrize(("channel", "identifier", "kind", "value"), UNMATCHED)
def test_no_match_shows_the_normalised_identifier(directory, channel, identifier, kind, value):
    identity = identify(channel=channel, identifier=identifier)
    assert identity["status"] == "unmatched"
    assert identity["display_name"] == value
    assert identity["name_source"] == "identifier"
    assert identity["contact"] is None
    assert identity["identifier"] == {
        "channel": channel,
        "kind": kind,
        "raw": identifier,
        "value": value,
    }
    assert "not in the directory" in identity["reason"]


AMBIGUOUS = [
    ("voice", "+46812345678", ["erik", "karin"]),
    ("SMS", "46812345678", ["erik", "karin"]),
    ("webchat", "SUPPORT@nordicbikes.se", ["lars", "sofia"]),
    ("email", "support@nordicbikes.se", ["lars", "sofia"]),
    ("INSTAGRAM", "1784", ["karin", "sofia"]),
]


@pytest.mark.parametrize(("channel", "identifier", "who"), AMBIGUOUS)
def test_several_matches_say_so_and_list_every_candidate(directory, channel, identifier, who):
    identity = identify(channel=channel, identifier=identifier)
    assert identity["status"] == "ambiguous"
    assert identity["contact"] is None
    assert identity["display_name"] == identity["identifier"]["value"]
    assert sorted(c["id"] for c in identity["candidates"]) == sorted(
        _ids(directory[w] for w in who)
    )
    assert identity["candidates_total"] == len(who)
    assert f"shared by {len(who)} contacts" in identity["reason"]


def test_ambiguity_lists_twenty_candidates_and_the_total(make_contact):
    for n in range(25):
        make_contact(f"Tenant {n:02d}", country="GB", phones=["020 7946 0000"])
    identity = identify(channel="voice", identifier="+442079460000")
    assert identity["status"] == "ambiguous"
    assert len(identity["candidates"]) == 20
    assert identity["candidates_total"] == 25
    assert [c["name"] for c in identity["candidates"]][:2] == ["Tenant 00", "Tenant 01"]


def test_identification_is_one_query(directory, django_assert_num_queries):
    with django_assert_num_queries(1):
        identify(channel="voice", identifier="+46812345678")
    with django_assert_num_queries(1):
        identify(channel="webchat", identifier="anna.svensson@nordicbikes.se")


# --- Withheld callers -------------------------------------------------------


WITHHELD = ["", "  ", "anonymous", "Anonymous", "PRIVATE", "withheld", "restricted", "unknown",
            "anonymous@anonymous.invalid"]  # fmt: skip


@pytest.mark.parametrize("cli", WITHHELD)
def test_a_withheld_caller_is_shown_as_withheld_without_a_lookup(
    directory, cli, django_assert_num_queries
):
    with django_assert_num_queries(0):
        identity = identify(channel="voice", identifier=cli)
    assert identity["status"] == "withheld"
    assert identity["display_name"] == "Withheld number"
    assert identity["identifier"]["value"] is None
    assert identity["verified"] is False


def test_withheld_is_a_voice_rule_not_an_email_one(directory):
    with pytest.raises(IdentifierError):
        identify(channel="webchat", identifier="anonymous")


# --- Names: claimed, platform-supplied, verified ----------------------------


def test_a_web_chat_visitors_typed_name_is_only_a_claim(directory):
    identity = identify(channel="webchat", identifier="nobody@example.com", name=" Bob  Smith ")
    assert identity["display_name"] == "nobody@example.com"
    assert identity["claimed_name"] == "Bob Smith"
    assert identity["verified"] is False


def test_an_email_from_display_name_is_shown_beside_the_address_as_a_claim(directory):
    identity = identify(channel="email", identifier="stranger@example.org", name="The CEO")
    assert identity["display_name"] == "stranger@example.org"
    assert identity["claimed_name"] == "The CEO"
    assert identity["verified"] is False


def test_a_matched_visitor_still_sees_the_directory_name_not_their_claim(directory):
    identity = identify(
        channel="webchat", identifier="anna.svensson@nordicbikes.se", name="Someone Else"
    )
    assert identity["display_name"] == "Anna Maria Svensson"
    assert identity["claimed_name"] == "Someone Else"


def test_webchat_is_verified_only_when_the_caller_proved_it(directory):
    assert identify(channel="webchat", identifier="oliver@hughes.co.uk")["verified"] is False
    proven = identify(channel="webchat", identifier="oliver@hughes.co.uk", verified=True)
    assert proven["verified"] is True


@pytest.mark.parametrize(
    ("channel", "verified"),
    [("WHATSAPP", True), ("MESSENGER", True), ("SINCH_CHAT", True), ("SMS", False),
     ("voice", False), ("email", False)],
)  # fmt: skip
def test_platform_channels_are_verified_spoofable_ones_are_not(directory, channel, verified):
    identifier = {"MESSENGER": "1", "SINCH_CHAT": "x", "email": "a@example.com"}.get(
        channel, "+46701234567"
    )
    assert identify(channel=channel, identifier=identifier)["verified"] is verified


@pytest.mark.parametrize(
    ("platform_name", "reason_part"),
    [
        ("Anna Maria Svensson", "ignoring case"),
        ("anna svensson", "middle name"),
        ("Svensson Anna Maria", "word order"),
        ("ANNA MARIA SVENSSON", "ignoring case"),
    ],
)
def test_a_platform_name_is_shown_and_checked_against_the_directory(
    directory, platform_name, reason_part
):
    identity = identify(channel="WHATSAPP", identifier="46701234567", name=platform_name)
    assert identity["status"] == "matched"
    assert identity["display_name"] == platform_name
    assert identity["name_source"] == "platform"
    assert identity["claimed_name"] is None
    match = identity["possible_match"]
    assert match["id"] == directory["anna"].pk
    assert "+46701234567 belongs to Anna Maria Svensson" in match["reason"]
    assert reason_part in match["reason"]


def test_a_platform_name_that_differs_from_the_directory_says_so(directory):
    identity = identify(channel="MESSENGER", identifier="2742085512340733", name="Kalle Anka")
    assert identity["display_name"] == "Kalle Anka"
    assert identity["possible_match"]["id"] == directory["anna"].pk
    assert "differs" in identity["possible_match"]["reason"]


def test_a_platform_name_picks_the_candidate_among_a_shared_identifier(directory):
    identity = identify(channel="INSTAGRAM", identifier="1784", name="sofia ek")
    assert identity["status"] == "ambiguous"
    assert identity["possible_match"]["id"] == directory["sofia"].pk
    assert "one of the 2 contacts" in identity["possible_match"]["reason"]


def test_an_unknown_identifier_with_a_known_name_suggests_the_contact(directory):
    identity = identify(channel="WHATSAPP", identifier="+46709999999", name="Oliver Hughes")
    assert identity["status"] == "unmatched"
    assert identity["display_name"] == "Oliver Hughes"
    assert identity["possible_match"]["id"] == directory["oliver"].pk
    assert "no contact holds +46709999999" in identity["possible_match"]["reason"]


def test_an_unknown_identifier_and_unknown_name_has_no_possible_match(directory):
    identity = identify(channel="VIBER", identifier="abc", name="Nobody Known")
    assert identity["possible_match"] is None
    assert identity["display_name"] == "Nobody Known"


def test_sms_never_shows_a_platform_name(directory):
    identity = identify(channel="SMS", identifier="46701234567", name="Spoofed Name")
    assert identity["display_name"] == "Anna Maria Svensson"
    assert identity["name_source"] == "directory"
    assert identity["claimed_name"] == "Spoofed Name"
    assert identity["possible_match"] is None


# --- CRM-integrated mode ----------------------------------------------------


@override_settings(CP_MODE="crm")
@pytest.mark.parametrize(
    ("channel", "identifier", "crm"),
    [
        ("voice", "46701234567", {"kind": "phone", "value": "+46701234567"}),
        ("SMS", "0046701234567", {"kind": "phone", "value": "+46701234567"}),
        ("WHATSAPP", "46701234567", {"kind": "phone", "value": "+46701234567"}),
        ("webchat", "Anna@Bücher.de", {"kind": "email", "value": "anna@xn--bcher-kva.de"}),
        ("MESSENGER", "2742085512340733",
         {"kind": "chat_id", "value": "2742085512340733@facebook.com"}),
        ("INSTAGRAM", "1784", {"kind": "chat_id", "value": "1784@instagram.com"}),
        ("TELEGRAM", "520012345", {"kind": "chat_id", "value": "520012345"}),
        ("voice", "anonymous", {"kind": "phone", "value": None}),
    ],
)  # fmt: skip
def test_crm_mode_hands_the_crm_its_form_of_the_identifier(directory, channel, identifier, crm):
    assert identify(channel=channel, identifier=identifier)["crm"] == crm


@override_settings(CP_MODE="crm", CRM_CHAT_ID_FORMATS={"TELEGRAM": "tg:{id}"})
def test_crm_chat_id_forms_are_configurable_per_channel(directory):
    assert identify(channel="TELEGRAM", identifier="5200")["crm"]["value"] == "tg:5200"


def test_standalone_mode_has_no_crm_block(directory):
    assert "crm" not in identify(channel="voice", identifier="46701234567")


# --- Bad input: a typed error, never a lookup -------------------------------


@pytest.mark.parametrize(
    ("channel", "identifier", "code"),
    [
        ("webchat", "not-an-email", "invalid_email"),
        ("webchat", "", "invalid_email"),
        ("email", "anna@localhost", "invalid_email"),
        ("voice", "12", "invalid_phone"),
        ("voice", "call me", "invalid_phone"),
        ("WHATSAPP", "+44 207", "invalid_phone"),
        ("SMS", "+" + "1" * 30, "invalid_phone"),
        ("MESSENGER", "", "invalid_chat_id"),
        ("MESSENGER", "has space", "invalid_chat_id"),
        ("FAX", "+46701234567", "unknown_channel"),
        ("", "x", "unknown_channel"),
    ],
)
def test_invalid_identifiers_raise_a_typed_error_before_any_query(
    directory, channel, identifier, code, django_assert_num_queries
):
    with django_assert_num_queries(0), pytest.raises(IdentifierError) as error:
        identify(channel=channel, identifier=identifier)
    assert error.value.code == code
    assert error.value.message


@override_settings(CP_DEFAULT_REGION="GB")
def test_national_incoming_numbers_are_read_in_the_default_region(directory):
    assert identify(channel="voice", identifier="020 7946 0958")["contact"]["name"] == (
        "Oliver Hughes"
    )


@override_settings(WEBCHAT_IDENTITY_SECRET="s3cret")
def test_the_identity_hash_is_an_hmac_of_the_normalised_email():
    import hashlib
    import hmac

    expected = hmac.new(b"s3cret", b"anna@example.com", hashlib.sha256).hexdigest()
    assert webchat_identity_hash("anna@example.com") == expected
