"""The directory's CSV format (SPEC §6), for import and export.

``external_id,name,company,country,emails,phones,chat_ids`` — UTF-8 with a
header row; multi-valued cells separated by ``;``; a chat id is
``CHANNEL:id``.

Export neutralises spreadsheet formulas: a cell starting with ``= + - @`` or
a tab / carriage return is prefixed with an apostrophe, which spreadsheets
treat as "this is text". Import removes that one apostrophe again, so an
exported file imports unchanged.
"""

from typing import NamedTuple

from directory.normalize import (
    IdentifierError,
    is_known_region,
    name_keys,
    normalize_email,
    normalize_phone,
    parse_chat_id_cell,
)

HEADER = ["external_id", "name", "company", "country", "emails", "phones", "chat_ids"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class RowError(ValueError):
    """A CSV row that cannot be imported, with a reason an admin can act on."""


class ContactRecord(NamedTuple):
    # A NamedTuple, not a dataclass: import workers send these between
    # processes, and a tuple pickles about 5x faster (bench/import_bench.py).
    external_id: str
    name: str
    company: str
    country: str
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    chat_ids: tuple[tuple[str, str], ...]
    name_keys: tuple[str, str]  # directory.normalize.name_keys(name)


def neutralise(cell: str) -> str:
    # Apostrophes already in front of a formula get one more, so that import
    # (which removes exactly one) gives back the original text.
    return "'" + cell if cell.lstrip("'").startswith(_FORMULA_START) else cell


def _unneutralise(cell: str) -> str:
    if cell.startswith("'") and cell.lstrip("'").startswith(_FORMULA_START):
        return cell[1:]
    return cell


def _split(cell: str) -> list[str]:
    return [part.strip() for part in cell.split(";") if part.strip()]


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def check_header(row: list[str]) -> None:
    found = [cell.strip().lstrip("\ufeff").lower() for cell in row]
    if found != HEADER:
        raise RowError(f"the header must be {','.join(HEADER)} (found {','.join(row)[:200]})")


def parse_row(row: list[str], *, default_region: str) -> ContactRecord:
    """One CSV data row into a normalised record, or RowError saying what is wrong."""
    if len(row) != len(HEADER):
        raise RowError(f"expected {len(HEADER)} columns, found {len(row)}")
    cells = [_unneutralise(cell.strip()) for cell in row]
    external_id, name, company, country, emails, phones, chat_ids = cells
    country = country.upper()
    if not name:
        raise RowError("name is empty")
    for column, value, limit in (
        ("name", name, 200),
        ("company", company, 200),
        ("external_id", external_id, 100),
    ):
        if len(value) > limit:
            raise RowError(f"{column} is longer than {limit} characters")
    if country and not is_known_region(country):
        raise RowError(f"country {country!r} is not an ISO 3166 alpha-2 code")
    try:
        return ContactRecord(
            external_id=external_id,
            name=name,
            company=company,
            country=country,
            emails=_unique([normalize_email(e) for e in _split(emails)]),
            phones=_unique(
                [normalize_phone(p, region=country or default_region) for p in _split(phones)]
            ),
            chat_ids=tuple(dict.fromkeys(parse_chat_id_cell(c) for c in _split(chat_ids))),
            name_keys=name_keys(name),
        )
    except IdentifierError as exc:
        raise RowError(exc.message) from exc


def format_row(
    *,
    external_id: str,
    name: str,
    company: str,
    country: str,
    emails: list[str],
    phones: list[str],
    chat_ids: list[str],
) -> list[str]:
    cells = [external_id, name, company, country, ";".join(emails), ";".join(phones)]
    return [neutralise(cell) for cell in [*cells, ";".join(chat_ids)]]
