"""Coverage-guided fuzzing (atheris, libFuzzer) of the identifier normalisers.

Whatever text arrives, each normaliser returns a value or raises
IdentifierError, and a normalised value normalises to itself.

    .venv/bin/python fuzz/normalize_fuzz.py -max_total_time=600 fuzz/corpus/normalize
    .venv/bin/python fuzz/normalize_fuzz.py -runs=20000          # what CI runs

libFuzzer's options pass through (``-help=1``); it prints the inputs run
(``Done N runs``) and saves a failing input as ``crash-…``.
"""

import os
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cpweb.settings")

with atheris.instrument_imports(include=["directory.normalize", "email_validator", "phonenumbers"]):
    import email_validator  # noqa: F401 - instrumented for coverage
    import phonenumbers

    from directory.normalize import (
        IdentifierError,
        name_keys,
        name_tokens,
        normalize_chat_id,
        normalize_email,
        normalize_phone,
        parse_chat_id_cell,
        phone_search_values,
    )

REGIONS = [None, "US", "GB", "SE", "DE", "IN", "BR", "JP"]


def _email(text: str) -> None:
    try:
        key = normalize_email(text)
    except IdentifierError as error:
        assert error.code == "invalid_email"
        return
    assert normalize_email(key) == key, (text, key)


def _phone(text: str, region: str | None, international_first: bool, valid: bool) -> None:
    options = {"international_first": international_first, "require_valid": valid}
    try:
        e164 = normalize_phone(text, region=region, **options)
    except IdentifierError as error:
        assert error.code == "invalid_phone"
        return
    assert e164.startswith("+") and e164[1:].isdigit(), (text, e164)
    assert normalize_phone(e164, region="US", **options) == e164, (text, e164)
    assert phonenumbers.is_possible_number(phonenumbers.parse(e164))
    phone_search_values(text, [region or "US"])


def _chat_id(text: str) -> None:
    try:
        value = normalize_chat_id(text)
    except IdentifierError as error:
        assert error.code == "invalid_chat_id"
    else:
        assert normalize_chat_id(value) == value
    try:
        channel, value = parse_chat_id_cell(text)
    except IdentifierError as error:
        assert error.code == "invalid_chat_id"
    else:
        assert parse_chat_id_cell(f"{channel}:{value}") == (channel, value)


def _name(text: str) -> None:
    tokens = name_tokens(text)
    assert name_tokens(" ".join(tokens)) == tokens, (text, tokens)
    name_keys(text)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    which = fdp.ConsumeIntInRange(0, 3)
    region = REGIONS[fdp.ConsumeIntInRange(0, len(REGIONS) - 1)]
    international_first, valid = fdp.ConsumeBool(), fdp.ConsumeBool()
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    if which == 0:
        _email(text)
    elif which == 1:
        _phone(text, region, international_first, valid)
    elif which == 2:
        _chat_id(text)
    else:
        _name(text)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
