"""Directory import throughput: ``directory_import()`` against a bare bulk insert.

What is measured
    A  ``directory.services.directory_import`` (what ``manage.py
       import_directory FILE --no-progress`` runs) on a CSV of ``--rows`` valid
       rows, into an empty directory, in batches of ``--batch-size``; the import
       must report ok and leave exactly ``--rows`` contacts.
    V  validation only: ``csv.reader`` and ``csv_format.parse_row`` over the
       same file, writing nothing, to split A into validating and writing.
    B  the baseline: the same rows, normalised before the timer starts with
       the project's own normalisers (``parse_row``, ``name_keys``), inserted
       into the same empty tables with raw ``executemany`` in batches of
       ``--batch-size`` inside one transaction: contacts with explicit ids,
       then their emails, phone numbers and chat ids.

Why the baseline is fair
    B writes exactly the rows A writes, into the same empty tables with the
    same indexes and durability settings, in one transaction as A does. It
    skips only what A is there for: reading and validating the CSV, and going
    through the ORM. A/B is therefore the price of validation plus the ORM,
    and A - V roughly the ORM's share of the writing, to set against B. The
    normalisation caches are cleared before A and V so neither profits from an
    earlier pass.

The CSV (SPEC §6 format) holds identifiers as people type them: emails in
mixed case, phone numbers in national format read in the row's country
(``070-123 45 67``, ``(202) 200-1234``) or in international format, and a
MESSENGER chat id on every 10th row; every external id and identifier is
unique. It is written once to bench/out/ and reused for the same ``--rows``.
On PostgreSQL this benchmark empties the directory tables of the database it
is given (the directory identify_bench.py built there is rebuilt next time).
"""

import argparse
import csv
import gc
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

common.setup_django("import_bench")

import phonenumbers  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from directory.csv_format import HEADER, check_header, parse_row  # noqa: E402
from directory.normalize import name_keys, normalize_email, normalize_phone  # noqa: E402
from directory.services import directory_import  # noqa: E402

PREFIX = "imp-"  # external ids of the rows this benchmark writes
STYLES = [phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.INTERNATIONAL]


def write_csv(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed + 1)
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for person in common.people(n, prefix=PREFIX, seed=seed, shared=False):
            number = phonenumbers.parse(person.phone)
            phone = phonenumbers.format_number(number, STYLES[person.id % 2])
            chat = f"MESSENGER:{person.chat_id}" if person.chat_id else ""
            email = common.mixed_case(person.email, rng)
            row = [person.external_id, person.name, person.company, person.country]
            writer.writerow([*row, email, phone, chat])
    partial.rename(path)


def open_csv(path: Path) -> TextIO:
    return path.open(encoding="utf-8-sig", newline="")  # as import_directory reads it


IMPORT_WORKERS = min(4, os.cpu_count() or 1)  # import_directory's default


def fresh_start() -> None:
    """Cold normalisation caches and no garbage left from the previous step."""
    normalize_email.cache_clear()
    normalize_phone.cache_clear()
    gc.collect()


def counts() -> list[int]:
    with connection.cursor() as cursor:
        found = []
        for table in common.TABLES.values():
            cursor.execute(f"SELECT COUNT(*) FROM {table}")
            found.append(cursor.fetchone()[0])
    return found


def validate_only(path: Path) -> int:
    region = settings.CP_DEFAULT_REGION
    with open_csv(path) as file:
        reader = csv.reader(file)
        check_header(next(reader))
        count = 0
        for row in reader:
            parse_row(row, default_region=region)
            count += 1
    return count


def normalised_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The rows B inserts: what A writes, normalised by the project's own code."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    rows: dict[str, list[tuple[Any, ...]]] = {"contact": [], "email": [], "phone": [], "chat": []}
    with open_csv(path) as file:
        reader = csv.reader(file)
        check_header(next(reader))
        for contact_id, row in enumerate(reader, start=1):
            record = parse_row(row, default_region=settings.CP_DEFAULT_REGION)
            rows["contact"].append(
                (contact_id, record.name, record.company, record.country, record.external_id,
                 *name_keys(record.name), now, now)
            )  # fmt: skip
            rows["email"] += [(contact_id, value) for value in record.emails]
            rows["phone"] += [(contact_id, value) for value in record.phones]
            rows["chat"] += [(contact_id, channel, value) for channel, value in record.chat_ids]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n, batch_size = args.rows, args.batch_size
    expected = [n, n, n, (n + 9) // 10]  # contacts, emails, phones, chat ids

    database = common.prepare_database()
    started = time.perf_counter()
    path = common.OUT / f"import_bench_{n}.csv"
    if path.exists():
        print(f"reusing {path.relative_to(common.REPO)}")
    else:
        print(f"writing {n:,} rows to {path.relative_to(common.REPO)} …", flush=True)
        write_csv(path, n, args.seed)
        print(f"written in {time.perf_counter() - started:.1f} s", flush=True)

    fresh_start()
    start = time.perf_counter()
    validated = validate_only(path)
    seconds_v = time.perf_counter() - start
    assert validated == n, f"validated {validated} rows, expected {n}"

    common.reset_directory()
    fresh_start()
    start = time.perf_counter()
    with open_csv(path) as file:
        # As `manage.py import_directory` runs it: validation in worker processes.
        report = directory_import(file, batch_size=batch_size, workers=IMPORT_WORKERS)
    seconds_a = time.perf_counter() - start
    if not report.ok or report.created != n or counts() != expected:
        raise SystemExit(f"import A failed: {report.errors[:5]}, counts {counts()}")

    common.reset_directory()
    rows = normalised_rows(path)
    fresh_start()
    start = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        for table, values in rows.items():
            common.insert_rows(cursor, table, values, batch_size)
    seconds_b = time.perf_counter() - start
    common.reset_sequences()
    if counts() != expected:
        raise SystemExit(f"insert B wrote {counts()}, expected {expected}")

    print()
    print(f"directory import throughput — {database}")
    print(f"{n:,} rows, batch size {batch_size:,}, Python {sys.version.split()[0]}")
    print()
    lines = [
        ("A  directory_import (import_directory)", seconds_a),
        ("V  validation only (csv.reader + parse_row)", seconds_v),
        ("   A - V: A's writing, estimated", seconds_a - seconds_v),
        ("B  bare executemany, pre-normalised (baseline)", seconds_b),
    ]
    rows_out = [[label, f"{s:.2f}", f"{n / s:,.0f}", f"{s / seconds_b:.2f}"] for label, s in lines]
    print(common.table(["measure", "seconds", "rows/s", "time / B"], rows_out))
    print()
    print(f"ratio A/B (time): {seconds_a / seconds_b:.2f}")
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
