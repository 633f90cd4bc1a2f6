"""Normalisation of customer identifiers and names (SPEC §1).

Every identifier is normalised before it is stored or looked up, so the
directory and the lookups agree on one spelling:

- email: validated by ``email-validator`` (no DNS); stored lower-cased with the
  domain in its IDNA (ASCII) form, so ``Anna@Bücher.de`` and
  ``anna@xn--bcher-kva.de`` are the same key;
- phone: parsed by ``phonenumbers``, stored as E.164;
- chat id: exact (channel, id).

Invalid input raises :class:`IdentifierError`, a ``ValueError`` with a stable
``code`` and a message an admin or integrator can act on.
"""

import re
import unicodedata
from collections.abc import Callable
from enum import StrEnum
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

MAX_IDENTIFIER_LENGTH = 320


class Kind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    CHAT_ID = "chat_id"


class IdentifierError(ValueError):
    """An identifier that cannot be normalised; never looked up."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Conversation API channels whose identity is an app-scoped id rather than a
# phone number, plus Sinch's own web chat (SPEC §1).
CHAT_ID_CHANNELS = frozenset(
    {
        "MESSENGER",
        "INSTAGRAM",
        "VIBER",
        "TELEGRAM",
        "LINE",
        "WECHAT",
        "KAKAOTALK",
        "KAKAOTALKCHAT",
        "APPLEBC",
        "SINCH_CHAT",
    }
)


# --- Email ------------------------------------------------------------------

# A plain ASCII address (dot-atom local part, LDH domain with an alphabetic
# TLD) is by far the common case. Every address this pattern accepts is one
# email-validator accepts with the same normalisation (a property test holds
# the two together), so it skips the library's ~35 µs of general parsing on
# the identification hot path. Anything else goes through email-validator.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"(?!-)(?![A-Za-z0-9]{2}--)[A-Za-z0-9-]{1,63}(?<!-)"
_PLAIN_EMAIL = re.compile(
    rf"(?P<local>{_ATEXT}+(?:\.{_ATEXT}+)*)@(?P<domain>(?:{_LABEL}\.)+(?P<tld>[A-Za-z]{{2,63}}))"
)
_SPECIAL_USE_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def _plain_email_key(address: str) -> str | None:
    plain = _PLAIN_EMAIL.fullmatch(address)
    if (
        plain
        and len(plain["local"]) <= 64
        and len(address) <= 254
        and plain["tld"].lower() not in _SPECIAL_USE_TLDS
    ):
        return address.lower()
    return None


@lru_cache(maxsize=65536)
def normalize_email(raw: str) -> str:
    """The lookup key of an email address, or IdentifierError."""
    address = raw.strip()
    if not address:
        raise IdentifierError("invalid_email", "An email address is required.")
    if len(address) > MAX_IDENTIFIER_LENGTH:
        raise IdentifierError("invalid_email", "That email address is too long.")
    plain = _plain_email_key(address)
    if plain is not None:
        return plain
    try:
        validated = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise IdentifierError(
            "invalid_email", f"{raw!r} is not a valid email address: {exc}"
        ) from exc
    return f"{validated.local_part.lower()}@{validated.ascii_domain.lower()}"


# --- Phone ------------------------------------------------------------------

_PHONE_SEPARATORS = re.compile(r"[\s\-./()\u00a0\u2010-\u2015]")
_PHONE_SHAPE = re.compile(r"\+?[0-9]{2,20}")
_E164 = phonenumbers.PhoneNumberFormat.E164


def _phone_digits(raw: str) -> str:
    text = raw.strip()
    if text.lower().startswith("tel:"):
        text = text[4:]
    text = _PHONE_SEPARATORS.sub("", text)
    if not _PHONE_SHAPE.fullmatch(text):
        raise IdentifierError(
            "invalid_phone",
            f"{raw!r} is not a phone number: use digits, optionally starting with + or 00.",
        )
    if text.startswith("00"):
        return "+" + text[2:]
    return text


def _interpretations(digits: str, region: str | None, international_first: bool) -> list[str]:
    """(text, region) readings of a number, most likely first, as '+…' or national."""
    if digits.startswith("+"):
        return [digits]
    national = [digits] if region else []
    if digits.startswith("0"):
        return national  # a trunk prefix: national format only
    international = ["+" + digits]
    return international + national if international_first else national + international


@lru_cache(maxsize=65536)
def normalize_phone(
    raw: str,
    *,
    region: str | None,
    international_first: bool = False,
    require_valid: bool = True,
) -> str:
    """The E.164 form of ``raw``, or IdentifierError.

    ``region`` reads national-format numbers (``020 7946 0958`` in GB).
    Digits without a plus are ambiguous: ``international_first`` reads them as
    E.164 without the ``+`` first (what carriers and Sinch send), otherwise as
    a national number first. ``require_valid`` demands a number in an assigned
    range (directory entry); without it a number of plausible length is enough
    (incoming calls from ranges newer than the phonenumbers metadata still
    show up as their number).
    """
    if len(raw) > MAX_IDENTIFIER_LENGTH:
        raise IdentifierError("invalid_phone", "That phone number is too long.")
    digits = _phone_digits(raw)
    readings = _interpretations(digits, region, international_first)
    if not readings:
        raise IdentifierError(
            "invalid_phone",
            f"{raw!r} has no country code and no country is known to read it in.",
        )
    checks = [phonenumbers.is_valid_number]
    if not require_valid:
        checks.append(phonenumbers.is_possible_number)
    for check in checks:
        for text in readings:
            try:
                number = phonenumbers.parse(text, None if text.startswith("+") else region)
            except phonenumbers.NumberParseException:
                continue
            if check(number):
                return _stable_e164(number, check)
    where = f" in {region}" if region and not digits.startswith("+") else ""
    raise IdentifierError("invalid_phone", f"{raw!r} is not a valid phone number{where}.")


def _stable_e164(
    number: phonenumbers.PhoneNumber, check: Callable[[phonenumbers.PhoneNumber], bool]
) -> str:
    """The E.164 form of ``number``, read back until it reads as itself.

    phonenumbers drops a zero written after some country codes (``+358 0 35001``)
    on each reading of a number it cannot validate: the first E.164 form can
    read back as a shorter one.
    The key stored and looked up is the one that no longer changes (found by
    fuzz/normalize_fuzz.py).
    """
    e164 = phonenumbers.format_number(number, _E164)
    for _ in range(20):  # one zero a pass, and E.164 has at most 15 digits
        again = phonenumbers.parse(e164)
        if not check(again):
            break
        stable = phonenumbers.format_number(again, _E164)
        if stable == e164:
            break
        e164 = stable
    return e164


def phone_search_values(raw: str, regions: list[str]) -> set[str]:
    """Every E.164 number ``raw`` could mean, read in each of ``regions``.

    For admin search: ``020 7946 0958``, ``+44 20 7946 0958`` and
    ``442079460958`` all reach +442079460958.
    """
    try:
        digits = _phone_digits(raw)
    except IdentifierError:
        return set()
    found = set()
    readings_regions: list[str | None] = [*regions] or [None]
    for region in readings_regions:
        for text in _interpretations(digits, region, international_first=True):
            try:
                number = phonenumbers.parse(text, None if text.startswith("+") else region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_possible_number(number):
                found.add(phonenumbers.format_number(number, _E164))
    return found


def is_known_region(code: str) -> bool:
    return code in phonenumbers.SUPPORTED_REGIONS


# --- Chat ids ---------------------------------------------------------------

_CHAT_ID_VALUE = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")


def normalize_chat_channel(raw: str) -> str:
    channel = raw.strip().upper()
    if channel not in CHAT_ID_CHANNELS:
        raise IdentifierError(
            "invalid_chat_id",
            f"{raw!r} is not a chat channel; use one of {', '.join(sorted(CHAT_ID_CHANNELS))}.",
        )
    return channel


def normalize_chat_id(raw: str) -> str:
    value = raw.strip()
    if not _CHAT_ID_VALUE.fullmatch(value):
        raise IdentifierError(
            "invalid_chat_id",
            "A chat id is 1 to 200 characters without spaces or control characters.",
        )
    return value


def parse_chat_id_cell(cell: str) -> tuple[str, str]:
    """``MESSENGER:2742085512340733`` into its normalised (channel, id)."""
    channel, sep, value = cell.partition(":")
    if not sep:
        raise IdentifierError("invalid_chat_id", f"{cell!r} must look like CHANNEL:id.")
    return normalize_chat_channel(channel), normalize_chat_id(value)


# --- Names ------------------------------------------------------------------

# Letters that carry no combining mark to strip, spelt the way people type
# them on a keyboard without the letter.
_FOLD = str.maketrans(
    {"ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "đ": "d", "Đ": "d", "æ": "ae", "Æ": "ae",
     "œ": "oe", "Œ": "oe", "þ": "th", "Þ": "th", "ı": "i"}  # noqa: RUF001
)  # fmt: skip
_NAME_SPLIT = re.compile(r"[\W_]+")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def name_tokens(name: str) -> tuple[str, ...]:
    """Words of a name without case, accents or punctuation, in order."""
    # One pass is not always enough: "ǿ" loses its accent only to become "ø",
    # which folds to "o" in a second. Fold until nothing changes (found by
    # fuzz/normalize_fuzz.py), so a folded name folds to itself.
    bare = _fold(name)
    for _ in range(4):
        again = _fold(bare)
        if again == bare:
            break
        bare = again
    return tuple(token for token in _NAME_SPLIT.split(bare) if token)


def name_keys(name: str) -> tuple[str, str]:
    """Indexed keys for finding a contact by name.

    The first is every word, sorted (survives word order); the second only the
    first and last words, sorted (survives a middle name on either side).
    """
    tokens = name_tokens(name)
    full = " ".join(sorted(tokens))
    short = " ".join(sorted({tokens[0], tokens[-1]})) if len(tokens) > 1 else full
    return full[:200], short[:200]


def names_agree(claimed: str, directory: str) -> str | None:
    """Why two names denote the same person, or None if they don't."""
    a, b = name_tokens(claimed), name_tokens(directory)
    if not a or not b:
        return None
    if a == b:
        return "same name, ignoring case and accents"
    if sorted(a) == sorted(b):
        return "same name in a different word order"
    shorter, longer = (a, b) if len(a) < len(b) else (b, a)
    remaining = list(longer)
    for token in shorter:
        if token not in remaining:
            return None
        remaining.remove(token)
    if len(shorter) < 2:
        return None  # one shared word ("Anna") is not enough to suggest a person
    extra = " ".join(remaining)
    return f"same name apart from the middle name {extra!r}"
