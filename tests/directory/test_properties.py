"""Property tests of the normalisers and ``identify`` (hypothesis): whatever
text arrives, they answer or raise IdentifierError, and a normalised value
normalises to itself."""

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from directory.identify import CHANNELS, identify, normalize_identifier
from directory.normalize import (
    IdentifierError,
    name_keys,
    name_tokens,
    names_agree,
    normalize_chat_id,
    normalize_email,
    normalize_phone,
    parse_chat_id_cell,
    phone_search_values,
)

REGIONS = st.sampled_from([None, "US", "GB", "SE", "DE", "FR", "IN", "BR", "JP", "AU"])
PHONE_TEXT = st.one_of(
    st.text(),
    st.text(alphabet="+0123456789 -.()/\u00a0", max_size=30),
    st.from_regex(r"(\+|00)?[1-9][0-9]{6,14}", fullmatch=True),
    st.from_regex(r"tel:\+?[0-9 -]{4,20}", fullmatch=True),
)
EMAIL_TEXT = st.one_of(
    st.text(),
    st.emails(),
    st.text(alphabet="aZé09.-_+@'=ü\u0130 ", max_size=40),
    st.builds("{}@{}".format, st.text(max_size=20), st.text(max_size=20)),
)
ANY_STATUS = {"matched", "unmatched", "ambiguous", "withheld"}


@settings(max_examples=1000, deadline=None)
@given(EMAIL_TEXT)
def test_email_normalisation_raises_only_its_error_and_is_idempotent(raw):
    try:
        key = normalize_email(raw)
    except IdentifierError as error:
        assert error.code == "invalid_email"
        assert error.message
        return
    assert key == key.strip().lower()
    assert key.isascii()
    assert normalize_email(key) == key
    assert normalize_email(key.upper()) == key  # case-insensitive on the whole address


@settings(max_examples=800, deadline=None)
@given(PHONE_TEXT, REGIONS, st.booleans(), st.booleans())
def test_phone_normalisation_raises_only_its_error_and_is_idempotent(
    raw, region, international_first, require_valid
):
    options = {"international_first": international_first, "require_valid": require_valid}
    try:
        e164 = normalize_phone(raw, region=region, **options)
    except IdentifierError as error:
        assert error.code == "invalid_phone"
        assert error.message
        return
    assert e164.startswith("+")
    assert e164[1:].isdigit()
    parsed = phonenumbers.parse(e164)
    check = phonenumbers.is_valid_number if require_valid else phonenumbers.is_possible_number
    assert check(parsed)
    # The E.164 form reads as itself in any region, and search finds it.
    for again_region in (region, "US", "SE", None):
        assert normalize_phone(e164, region=again_region, **options) == e164
    assert e164 in phone_search_values(e164, [])


@settings(max_examples=500, deadline=None)
@given(PHONE_TEXT, st.lists(st.sampled_from(["US", "GB", "SE", "DE"]), max_size=3))
def test_phone_search_never_raises_and_finds_only_e164(raw, regions):
    for value in phone_search_values(raw, regions):
        assert value.startswith("+")
        assert value[1:].isdigit()


@settings(max_examples=1000, deadline=None)
@given(st.text())
def test_chat_ids_raise_only_their_error_and_are_idempotent(raw):
    try:
        value = normalize_chat_id(raw)
    except IdentifierError as error:
        assert error.code == "invalid_chat_id"
        return
    assert normalize_chat_id(value) == value
    assert 1 <= len(value) <= 200


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.text(), st.builds("{}:{}".format, st.text(max_size=15), st.text())))
def test_chat_id_cells_raise_only_their_error_and_read_back(cell):
    try:
        channel, value = parse_chat_id_cell(cell)
    except IdentifierError as error:
        assert error.code == "invalid_chat_id"
        return
    assert parse_chat_id_cell(f"{channel}:{value}") == (channel, value)


@settings(max_examples=1000, deadline=None)
@given(st.text(), st.text())
def test_names_never_raise_and_their_keys_are_stable(a, b):
    tokens = name_tokens(a)
    assert name_tokens(" ".join(tokens)) == tokens
    assert name_keys(" ".join(tokens)) == name_keys(a)
    assert (names_agree(a, b) is None) == (names_agree(b, a) is None)
    if len(tokens) >= 2:
        assert names_agree(a, a) is not None


# --- identify ---------------------------------------------------------------------------

CHANNEL_TEXT = st.one_of(
    st.sampled_from(sorted(CHANNELS)),
    st.sampled_from(sorted(CHANNELS)).map(str.swapcase),
    st.text(max_size=12),
)
IDENTIFIER_TEXT = st.one_of(st.text(), PHONE_TEXT, EMAIL_TEXT)


@pytest.fixture
def directory(make_contact):
    make_contact(
        "Anna Svensson",
        country="SE",
        emails=["anna@example.com"],
        phones=["070-123 45 67"],
        chat_ids=[("MESSENGER", "2742085512340733")],
    )
    make_contact("Erik Lindqvist", country="SE", phones=["+46 70 123 45 67"])


@pytest.mark.django_db
@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(CHANNEL_TEXT, IDENTIFIER_TEXT, st.none() | st.text(max_size=300), st.booleans())
def test_identify_answers_an_identity_or_raises_only_identifier_error(
    directory, channel, identifier, name, verified
):
    try:
        identity = identify(channel=channel, identifier=identifier, name=name, verified=verified)
    except IdentifierError as error:
        assert error.code in {"invalid_email", "invalid_phone", "invalid_chat_id",
                              "unknown_channel"}  # fmt: skip
        return
    assert identity["status"] in ANY_STATUS
    assert isinstance(identity["display_name"], str)
    assert identity["display_name"]
    assert identity["reason"]
    value = identity["identifier"]["value"]
    if value is None:
        assert identity["status"] == "withheld"
        return
    # Identifying the normalised value again gives the same answer.
    again = identify(channel=channel, identifier=value, name=name, verified=verified)
    assert again["identifier"]["value"] == value
    assert (again["status"], again["contact"]) == (identity["status"], identity["contact"])
    assert normalize_identifier(identity["identifier"]["channel"], value) == value


@pytest.mark.django_db
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.sampled_from([" ", "-", ".", "(", ")", "\u00a0"]), min_size=9, max_size=9),
    st.sampled_from(["+46", "0046", "46"]),
    st.sampled_from(["SMS", "voice", "WHATSAPP"]),
)
def test_any_spelling_of_a_stored_number_finds_its_contacts(directory, separators, prefix, channel):
    spelt = prefix + "".join(d + s for d, s in zip("701234567", separators, strict=True))
    identity = identify(channel=channel, identifier=spelt)
    assert identity["identifier"]["value"] == "+46701234567"
    assert identity["status"] == "ambiguous"
    assert identity["candidates_total"] == 2
