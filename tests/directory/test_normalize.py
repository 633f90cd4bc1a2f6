"""Normalisation of emails, phone numbers, chat ids and names (SPEC §1)."""

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from directory.normalize import (
    _PLAIN_EMAIL,
    IdentifierError,
    _plain_email_key,
    name_keys,
    name_tokens,
    names_agree,
    normalize_chat_id,
    normalize_email,
    normalize_phone,
    parse_chat_id_cell,
    phone_search_values,
)

# (country, national as people type it, international as printed, E.164)
PHONES = [
    ("GB", "020 7946 0958", "+44 20 7946 0958", "+442079460958"),
    ("SE", "070-123 45 67", "+46 70 123 45 67", "+46701234567"),
    ("DE", "030 12345678", "+49 30 12345678", "+493012345678"),
    ("FR", "01 23 45 67 89", "+33 1 23 45 67 89", "+33123456789"),
    ("ES", "612 345 678", "+34 612 34 56 78", "+34612345678"),
    ("IT", "06 1234 5678", "+39 06 1234 5678", "+390612345678"),
    ("NL", "020 123 4567", "+31 20 123 4567", "+31201234567"),
    ("US", "(202) 555-0143", "+1 202-555-0143", "+12025550143"),
    ("BR", "(11) 91234-5678", "+55 11 91234-5678", "+5511912345678"),
    ("IN", "098765 43210", "+91 98765 43210", "+919876543210"),
    ("JP", "03-1234-5678", "+81 3-1234-5678", "+81312345678"),
    ("AU", "(02) 9876 5432", "+61 2 9876 5432", "+61298765432"),
    ("MX", "55 1234 5678", "+52 55 1234 5678", "+525512345678"),
    ("ZA", "021 123 4567", "+27 21 123 4567", "+27211234567"),
    ("PL", "512 345 678", "+48 512 345 678", "+48512345678"),
]


@pytest.mark.parametrize(("country", "national", "international", "e164"), PHONES)
def test_every_form_of_a_number_normalises_to_the_same_e164(country, national, international, e164):
    digits = e164[1:]
    assert normalize_phone(national, region=country) == e164
    assert normalize_phone(international, region="US") == e164
    assert normalize_phone(digits, region="US", international_first=True) == e164
    assert normalize_phone(digits, region=country) == e164
    assert normalize_phone("00" + digits, region="US") == e164
    assert normalize_phone(f"tel:{e164}", region=None) == e164


@pytest.mark.parametrize(("country", "national", "international", "e164"), PHONES)
def test_normalising_a_normalised_number_changes_nothing(country, national, international, e164):
    assert normalize_phone(e164, region=None) == e164
    assert normalize_phone(normalize_phone(national, region=country), region="US") == e164


def test_national_digits_without_plus_prefer_the_region_unless_told_otherwise():
    # 2025550143 is a valid US number; read as E.164 it would be +20 (Egypt).
    assert normalize_phone("2025550143", region="US") == "+12025550143"


def test_digits_with_country_code_are_read_as_e164_first_for_carriers():
    assert normalize_phone("46701234567", region="US", international_first=True) == "+46701234567"


@pytest.mark.parametrize(
    ("raw", "region", "why"),
    [
        ("", "US", "not a phone number"),
        ("hello", "US", "not a phone number"),
        ("+44 20 7946 095", None, "not a valid phone number"),  # one digit short
        ("12345", "GB", "not a valid phone number"),
        ("020 7946 0958", None, "no country"),
        ("+1 800 FLOWERS", None, "not a phone number"),
        ("+" + "9" * 40, None, "not a phone number"),
        ("1" * 400, None, "too long"),
        ("+46 70 123 45 67 ext 12", None, "not a phone number"),
    ],
)
def test_invalid_numbers_raise_a_clear_typed_error(raw, region, why):
    with pytest.raises(IdentifierError) as error:
        normalize_phone(raw, region=region)
    assert error.value.code == "invalid_phone"
    assert why in error.value.message


def test_an_unassigned_but_plausible_number_is_accepted_only_when_asked():
    # +1 555 123 4567 is in the fictional 555 range: not assigned, plausible length.
    with pytest.raises(IdentifierError):
        normalize_phone("+15551234567", region=None)
    assert normalize_phone("+15551234567", region=None, require_valid=False) == "+15551234567"


def test_admin_search_reaches_the_number_from_any_typed_form():
    for typed in ("020 7946 0958", "+44 20 7946 0958", "442079460958", "00442079460958"):
        assert "+442079460958" in phone_search_values(typed, ["US", "GB"])


# --- Email ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Anna.Svensson@Example.COM", "anna.svensson@example.com"),
        ("  anna.svensson@example.com  ", "anna.svensson@example.com"),
        ("ANNA+orders@EXAMPLE.co.uk", "anna+orders@example.co.uk"),
        ("anna@bücher.de", "anna@xn--bcher-kva.de"),
        ("ANNA@BÜCHER.DE", "anna@xn--bcher-kva.de"),
        ("anna@xn--bcher-kva.de", "anna@xn--bcher-kva.de"),
        ("Jürgen@Müller.example", "jürgen@xn--mller-kva.example"),
        ("用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v"),
    ],
)
def test_emails_match_case_insensitively_and_by_idna_domain(raw, key):
    assert normalize_email(raw) == key
    assert normalize_email(key) == key


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "anna",
        "anna@",
        "@example.com",
        "anna@example",
        "anna svensson@example.com",
        "anna@example..com",
        ".anna@example.com",
        "anna.@example.com",
        "anna@localhost",
        "anna@printer.local",
        "anna@-example.com",
        "a@" + "b" * 400 + ".com",
        "Anna <anna@example.com>",
    ],
)
def test_invalid_emails_raise_a_clear_typed_error(raw):
    with pytest.raises(IdentifierError) as error:
        normalize_email(raw)
    assert error.value.code == "invalid_email"
    assert error.value.message


def _validator_key(address: str) -> str | None:
    try:
        validated = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{validated.local_part.lower()}@{validated.ascii_domain.lower()}"


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.from_regex(_PLAIN_EMAIL, fullmatch=True),
        st.emails(),
        st.text(alphabet="aZ09.-_+@'=", max_size=40),
    )
)
def test_the_fast_path_agrees_with_email_validator(address):
    fast = _plain_email_key(address)
    if fast is not None:
        assert _validator_key(address) == fast


@settings(max_examples=500, deadline=None)
@given(st.emails())
def test_email_normalisation_is_idempotent(address):
    try:
        key = normalize_email(address)
    except IdentifierError:
        return
    assert normalize_email(key) == key


# --- Chat ids ---------------------------------------------------------------


def test_chat_id_cells_name_a_channel_and_an_exact_id():
    assert parse_chat_id_cell("messenger:2742085512340733") == ("MESSENGER", "2742085512340733")
    assert parse_chat_id_cell("LINE:U4af4980629aaaa") == ("LINE", "U4af4980629aaaa")


@pytest.mark.parametrize("cell", ["2742085512340733", "FAX:123", "MESSENGER:", "MESSENGER:a b"])
def test_bad_chat_id_cells_raise(cell):
    with pytest.raises(IdentifierError) as error:
        parse_chat_id_cell(cell)
    assert error.value.code == "invalid_chat_id"


def test_chat_ids_are_exact_and_case_sensitive():
    assert normalize_chat_id(" U4af49 ") == "U4af49"
    assert normalize_chat_id("u4af49") != normalize_chat_id("U4af49")


# --- Names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claimed", "directory", "because"),
    [
        ("anna svensson", "Anna Svensson", "ignoring case"),
        ("Chloe Tremblay", "Chloé Tremblay", "accents"),
        ("Svensson, Anna", "Anna Svensson", "word order"),
        ("Anna Svensson", "Anna Maria Svensson", "middle name 'maria'"),
        ("SVENSSON Anna-Maria", "Anna Maria Svensson", "word order"),
        ("Mikkel Sorensen", "Mikkel Sørensen", "ignoring case"),
        ("Jurgen Muller", "Jürgen Müller", "accents"),
        ("Soren Kierkegaard", "Sǿren Kierkegaard", "accents"),  # ǿ: an accent on an ø
    ],
)
def test_names_agree_despite_case_accents_order_and_middle_names(claimed, directory, because):
    reason = names_agree(claimed, directory)
    assert reason is not None
    assert because in reason


@pytest.mark.parametrize(
    ("claimed", "directory"),
    [
        ("Anna Svensson", "Anna Lindqvist"),
        ("Anna", "Anna Svensson"),
        ("", "Anna Svensson"),
        ("Erik Svensson", "Anna Maria Svensson"),
    ],
)
def test_different_people_do_not_agree(claimed, directory):
    assert names_agree(claimed, directory) is None


def test_name_keys_survive_order_and_middle_names():
    assert name_keys("Svensson, Anna")[0] == name_keys("Anna Svensson")[0]
    assert name_keys("Anna Maria Svensson")[1] == name_keys("Anna Svensson")[0]


@pytest.mark.parametrize(
    ("raw", "key"),
    [("35-80035-001", "+35835001"), ("+358 0035 001", "+35835001"), ("+35835001", "+35835001"),
     ("910000019278484", "+9119278484")],
)  # fmt: skip
def test_zeros_after_the_country_code_normalise_to_one_key(raw, key):
    # Found by fuzz/normalize_fuzz.py: +3580035001 read back as +358035001,
    # and that as +35835001; only the last reads as itself.
    e164 = normalize_phone(raw, region=None, international_first=True, require_valid=False)
    assert e164 == key
    assert normalize_phone(e164, region="US", international_first=True, require_valid=False) == e164


@pytest.mark.parametrize("name", ["\U0010ff00ǿ\U0010ff00ÿ", "\u210cans Ǿstergaard", "ǰosé"])
def test_a_folded_name_folds_to_itself(name):
    # Found by fuzz/normalize_fuzz.py: "ǿ" folded to "ø" in one pass, "o" in two.
    tokens = name_tokens(name)
    assert name_tokens(" ".join(tokens)) == tokens
