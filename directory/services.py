"""Writes to the contact directory: create, merge, import."""

import csv
import gc
import itertools
import multiprocessing
import multiprocessing.pool
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from directory.csv_format import ContactRecord, RowError, check_header, parse_row
from directory.models import Contact, ContactChatId, ContactEmail, ContactPhone
from directory.normalize import (
    normalize_chat_channel,
    normalize_chat_id,
    normalize_email,
    normalize_phone,
)
from directory.signals import directory_changed


def contact_create(
    *,
    name: str,
    company: str = "",
    country: str = "",
    external_id: str = "",
    emails: Iterable[str] = (),
    phones: Iterable[str] = (),
    chat_ids: Iterable[tuple[str, str]] = (),
) -> Contact:
    """A contact with its identifiers, each normalised (IdentifierError if one is invalid)."""
    region = country.upper() or settings.CP_DEFAULT_REGION
    email_values = dict.fromkeys(normalize_email(e) for e in emails)
    phone_values = dict.fromkeys(normalize_phone(p, region=region) for p in phones)
    chat_values = dict.fromkeys(
        (normalize_chat_channel(c), normalize_chat_id(v)) for c, v in chat_ids
    )
    with transaction.atomic():
        contact = Contact(name=name, company=company, country=country, external_id=external_id)
        contact.full_clean()
        contact.save()
        ContactEmail.objects.bulk_create(
            ContactEmail(contact=contact, value=value) for value in email_values
        )
        ContactPhone.objects.bulk_create(
            ContactPhone(contact=contact, value=value) for value in phone_values
        )
        ContactChatId.objects.bulk_create(
            ContactChatId(contact=contact, channel=channel, value=value)
            for channel, value in chat_values
        )
        directory_changed.send(
            sender=Contact,
            identifiers={*email_values, *phone_values, *(value for _, value in chat_values)},
        )
    return contact


def contact_merge(*, keep: Contact, others: Iterable[Contact]) -> Contact:
    """Move every identifier of ``others`` onto ``keep`` and delete ``others``.

    Identifiers ``keep`` already holds are not duplicated. Blank company,
    country and external id on ``keep`` are filled from the merged contacts.
    """
    merged = [other for other in others if other.pk != keep.pk]
    merged_ids = [other.pk for other in merged]
    with transaction.atomic():
        held_emails = set(keep.emails.values_list("value", flat=True))
        held_phones = {str(p) for p in keep.phones.values_list("value", flat=True)}
        held_chats = set(keep.chat_ids.values_list("channel", "value"))
        for email in ContactEmail.objects.filter(contact_id__in=merged_ids).order_by("id"):
            if email.value not in held_emails:
                held_emails.add(email.value)
                ContactEmail.objects.filter(pk=email.pk).update(contact=keep)
        for phone in ContactPhone.objects.filter(contact_id__in=merged_ids).order_by("id"):
            if str(phone.value) not in held_phones:
                held_phones.add(str(phone.value))
                ContactPhone.objects.filter(pk=phone.pk).update(contact=keep)
        for chat in ContactChatId.objects.filter(contact_id__in=merged_ids).order_by("id"):
            if (chat.channel, chat.value) not in held_chats:
                held_chats.add((chat.channel, chat.value))
                ContactChatId.objects.filter(pk=chat.pk).update(contact=keep)
        for attribute in ("company", "country", "external_id"):
            if not getattr(keep, attribute):
                donor = next((o for o in merged if getattr(o, attribute)), None)
                if donor is not None:
                    setattr(keep, attribute, getattr(donor, attribute))
        Contact.objects.filter(pk__in=merged_ids).delete()
        keep.save()
        directory_changed.send(sender=Contact, identifiers=_identifier_values([keep.pk]))
    return keep


def _identifier_values(contact_ids: list[int]) -> set[str]:
    return {
        *ContactEmail.objects.filter(contact_id__in=contact_ids).values_list("value", flat=True),
        *(
            str(v)
            for v in ContactPhone.objects.filter(contact_id__in=contact_ids).values_list(
                "value", flat=True
            )
        ),
        *ContactChatId.objects.filter(contact_id__in=contact_ids).values_list("value", flat=True),
    }


# --- Import -----------------------------------------------------------------

MAX_REPORTED_ERRORS = 1000


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    rows: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    error_count: int = 0

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def add_error(self, row_number: int, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append((row_number, reason))


_PARSE_CHUNK = 2000
# (row number, blank?, the record or why the row is bad)
ParsedRow = tuple[int, bool, ContactRecord | str | None]


def _parse_chunk(job: tuple[list[tuple[int, list[str]]], str]) -> list[ParsedRow]:
    rows, region = job
    parsed: list[ParsedRow] = []
    for row_number, row in rows:
        if not any(cell.strip() for cell in row):
            parsed.append((row_number, True, None))  # blank lines are not contacts
            continue
        try:
            parsed.append((row_number, False, parse_row(row, default_region=region)))
        except RowError as exc:
            parsed.append((row_number, False, str(exc)))
    return parsed


def _worker_init() -> None:
    # The forked worker inherits this process's whole heap; frozen, the garbage
    # collector stops rescanning it while validation allocates (about 5% faster).
    gc.freeze()


def _parsed_rows(
    reader: Iterator[list[str]], region: str, pool: multiprocessing.pool.Pool | None
) -> Iterator[ParsedRow]:
    """Rows normalised in order; with a pool, in worker processes a few chunks
    ahead of the writing, so validation and database writes overlap."""
    numbered = enumerate(reader, start=2)
    chunks = iter(lambda: list(itertools.islice(numbered, _PARSE_CHUNK)), [])
    if pool is None:
        for chunk in chunks:
            yield from _parse_chunk((chunk, region))
        return
    ahead: deque[multiprocessing.pool.AsyncResult[list[ParsedRow]]] = deque()
    for chunk in chunks:
        ahead.append(pool.apply_async(_parse_chunk, ((chunk, region),)))
        if len(ahead) > 4:
            yield from ahead.popleft().get()
    while ahead:
        yield from ahead.popleft().get()


def _records(
    parsed: Iterator[ParsedRow], report: ImportReport
) -> Iterator[tuple[int, ContactRecord]]:
    """Valid records with their spreadsheet row numbers; bad rows go to the report."""
    seen_external_ids: dict[str, int] = {}
    for row_number, blank, result in parsed:
        report.rows += 1
        if blank:
            continue
        if not isinstance(result, ContactRecord):
            report.add_error(row_number, str(result))
            continue
        if result.external_id:
            first = seen_external_ids.setdefault(result.external_id, row_number)
            if first != row_number:
                report.add_error(
                    row_number, f"external_id {result.external_id!r} repeats row {first}"
                )
                continue
        yield row_number, result


def directory_import(
    stream: TextIO,
    *,
    update: bool = False,
    batch_size: int = 5000,
    workers: int = 0,
    on_batch: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Import a directory CSV (SPEC §6): everything, or nothing if any row is bad.

    Rows stream through in batches inside one transaction; after the first bad
    row the rest are still validated (so every error is reported) but nothing
    more is written, and the transaction is rolled back at the end.

    With ``update``, a row whose external_id is already in the directory
    replaces that contact's fields and identifiers; otherwise such a row is an
    error. ``workers`` > 0 validates rows in that many forked processes while
    this one writes (for large files; the workers never touch the database).
    """
    report = ImportReport()
    reader = csv.reader(stream)
    try:
        check_header(next(reader))
    except StopIteration:
        report.add_error(1, "the file is empty")
        return report
    except RowError as exc:
        report.add_error(1, str(exc))
        return report
    except csv.Error as exc:
        report.add_error(1, f"the CSV is malformed: {exc}")
        return report
    except UnicodeDecodeError:
        report.add_error(1, "the file is not UTF-8 text")
        return report

    pool = (
        multiprocessing.get_context("fork").Pool(workers, initializer=_worker_init)
        if workers > 0
        else None
    )
    try:
        _import_rows(reader, report, update=update, batch_size=batch_size,
                     pool=pool, on_batch=on_batch)  # fmt: skip
    finally:
        if pool is not None:
            pool.terminate()
    return report


def _import_rows(
    reader: Iterator[list[str]],
    report: ImportReport,
    *,
    update: bool,
    batch_size: int,
    pool: multiprocessing.pool.Pool | None,
    on_batch: Callable[[ImportReport], None] | None,
) -> None:
    with transaction.atomic():
        batch: list[tuple[int, ContactRecord]] = []
        records = _records(_parsed_rows(reader, settings.CP_DEFAULT_REGION, pool), report)
        try:
            for item in records:
                batch.append(item)
                if len(batch) >= batch_size:
                    _import_batch(batch, update=update, report=report)
                    batch.clear()
                    if on_batch:
                        on_batch(report)
        except csv.Error as exc:
            report.add_error(report.rows + 2, f"the CSV is malformed: {exc}")
        except UnicodeDecodeError:
            report.add_error(report.rows + 2, "the file is not UTF-8 text")
        if batch:
            _import_batch(batch, update=update, report=report)
        if on_batch:
            on_batch(report)
        if not report.ok:
            transaction.set_rollback(True)
            report.created = report.updated = 0
        elif report.created or report.updated:
            directory_changed.send(sender=Contact, identifiers=None)


def _import_batch(
    batch: list[tuple[int, ContactRecord]], *, update: bool, report: ImportReport
) -> None:
    external_ids = [record.external_id for _, record in batch if record.external_id]
    existing = _contact_ids_by_external_id(external_ids) if external_ids else {}
    if existing and not update:
        for row_number, record in batch:
            if record.external_id in existing:
                report.add_error(
                    row_number,
                    f"external_id {record.external_id!r} is already in the directory "
                    "(import in update mode to replace it)",
                )
    if not report.ok:
        return  # keep validating the rest, write nothing

    new = [record for _, record in batch if record.external_id not in existing]
    pairs = list(zip(_insert_contacts(new), new, strict=True))
    to_update = [record for _, record in batch if record.external_id in existing]
    if to_update:
        now = timezone.now()
        contacts = [
            Contact(
                id=existing[record.external_id],
                name=record.name,
                company=record.company,
                country=record.country,
                external_id=record.external_id,
                name_key=record.name_keys[0],
                name_short_key=record.name_keys[1],
                updated_at=now,
            )
            for record in to_update
        ]
        Contact.objects.bulk_update(
            contacts,
            ["name", "company", "country", "name_key", "name_short_key", "updated_at"],
        )
        ids = [contact.id for contact in contacts]
        for model in (ContactEmail, ContactPhone, ContactChatId):
            model.objects.filter(contact_id__in=ids).delete()
        pairs += [(contact.id, record) for contact, record in zip(contacts, to_update, strict=True)]

    _insert_rows(ContactEmail, ["contact_id", "value"],
                 [(c, v) for c, record in pairs for v in record.emails])  # fmt: skip
    _insert_rows(ContactPhone, ["contact_id", "value"],
                 [(c, v) for c, record in pairs for v in record.phones])  # fmt: skip
    _insert_rows(ContactChatId, ["contact_id", "channel", "value"],
                 [(c, ch, v) for c, record in pairs for ch, v in record.chat_ids])  # fmt: skip
    report.created += len(new)
    report.updated += len(to_update)


def _contact_ids_by_external_id(external_ids: list[str]) -> dict[str, int]:
    """{external_id: contact id} of those already in the directory.

    Raw SQL: the ORM spends more time preparing a 5,000-value IN list than the
    database spends answering it. The NOT (… = '') term matches the partial
    unique index's condition, without which a large IN list scans the table.
    """
    table = Contact._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT external_id, id FROM {table} WHERE NOT (external_id = '') "  # noqa: S608
            f"AND external_id IN ({', '.join(['%s'] * len(external_ids))})",
            external_ids,
        )
        return dict(cursor.fetchall())


def _insert_rows(model: type[Model], columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """INSERT already-normalised identifier rows with one prepared statement.

    bulk_create would build a model instance per row and, for phone numbers,
    parse every E.164 string twice more (django-phonenumber-field's descriptor
    and get_prep_value): two thirds of an import's time (bench/import_bench.py).
    """
    if not rows:
        return
    placeholders = ", ".join(["%s"] * len(columns))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) "  # noqa: S608
            f"VALUES ({placeholders})",
            rows,
        )


def _insert_contacts(records: list[ContactRecord]) -> list[int]:
    """Multi-row INSERT … RETURNING id of new contacts; their ids, in order.

    Rows come back in the order of VALUES, which bulk_create relies on too;
    going around it saves building every row through the ORM.
    """
    fields = ["name", "company", "country", "external_id", "name_key", "name_short_key",
              "created_at", "updated_at"]  # fmt: skip
    table = Contact._meta.db_table
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    stamp = connection.ops.adapt_datetimefield_value(timezone.now())
    ids: list[int] = []
    with connection.cursor() as cursor:
        for start in range(0, len(records), _INSERT_CHUNK):
            chunk = records[start : start + _INSERT_CHUNK]
            values: list[Any] = []
            for r in chunk:
                values += (r.name, r.company, r.country, r.external_id, *r.name_keys, stamp, stamp)
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(fields)}) VALUES "  # noqa: S608
                + ", ".join([row_sql] * len(chunk))
                + " RETURNING id",
                values,
            )
            ids += [row[0] for row in cursor.fetchall()]
    return ids


_INSERT_CHUNK = 500
