"""Identification latency: ``identify()`` against the bare indexed query it runs.

What is measured
    ``--samples`` calls of ``directory.identify.identify`` per series, on a
    directory of ``--contacts`` contacts, each with a different identifier of
    a contact in the directory, given in the raw form it arrives in: a web
    chat email in mixed case, a voice caller id as E.164 digits without the
    plus (what Sinch sends), a MESSENGER chat id. A fourth series asks for
    emails no contact holds. About 0.1% of the identifiers are shared by 2-3
    contacts, so some answers are ambiguous.

Baselines, measured in the same run
    bare SQL: exactly the query identify() runs (``selectors._lookup_sql``,
    with the parameters ``selectors.contacts_by_identifier`` passes, through
    ``django.db.connection.cursor()``, ``fetchall()``), given the value
    already normalised. No implementation of identify() can beat it, so
    identify/bare is what normalisation and building the answer cost.
    ORM: the same lookup through the Django ORM (``values_list`` of the
    contact's fields, same order, one more row instead of the window count),
    for what the query would cost written that way.

Why the comparison is fair
    Each sample makes the three calls back to back with the same identifier,
    in an order that rotates from one sample to the next, so machine noise
    and the first touch of the identifier's index pages fall on all three
    alike. Each series is warmed up with other identifiers first. Within a
    series the identifiers are distinct (unless the directory has too few chat
    ids), so identify()'s normalisation caches never answer from memory, as
    for a stream of different customers.

The directory is built with raw executemany (pre-normalised rows, batches of
10,000 per transaction, then ANALYZE) and kept: a rerun with the same
``--contacts`` reuses it. See bench/_common.py for which database is used.
"""

import argparse
import gc
import itertools
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

common.setup_django("identify_bench")

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from directory.identify import identify  # noqa: E402
from directory.models import ContactChatId, ContactEmail, ContactPhone  # noqa: E402
from directory.normalize import Kind, name_keys  # noqa: E402
from directory.selectors import CANDIDATE_LIMIT, _lookup_sql  # noqa: E402

PREFIX = "idb-"  # external ids of the contacts this benchmark builds
BUILD_BATCH = 10_000
ORDERS = ["identify", "bare SQL", "ORM"]
MODELS: dict[Kind, Any] = {
    Kind.EMAIL: ContactEmail,
    Kind.PHONE: ContactPhone,
    Kind.CHAT_ID: ContactChatId,
}
Pair = tuple[str, str]  # (raw identifier, normalised value)
TABLE_OF = {Kind.EMAIL: "email", Kind.PHONE: "phone", Kind.CHAT_ID: "chat"}


def has_directory(n: int) -> bool:
    with connection.cursor() as cursor:
        table = common.TABLES["contact"]
        cursor.execute(f"SELECT COUNT(*), MIN(external_id), MAX(external_id) FROM {table}")
        count, low, high = cursor.fetchone()
    return count == n and low == f"{PREFIX}{0:07d}" and high == f"{PREFIX}{n - 1:07d}"


def build_directory(n: int, seed: int) -> None:
    common.reset_directory()
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    people = common.people(n, prefix=PREFIX, seed=seed, shared=True)
    while chunk := list(itertools.islice(people, BUILD_BATCH)):
        rows: dict[str, list[tuple[Any, ...]]] = {
            "contact": [
                (p.id, p.name, p.company, p.country, p.external_id, *name_keys(p.name), now, now)
                for p in chunk
            ],
            "email": [(p.id, p.email) for p in chunk],
            "phone": [(p.id, p.phone) for p in chunk],
            "chat": [(p.id, "MESSENGER", p.chat_id) for p in chunk if p.chat_id],
        }
        with transaction.atomic(), connection.cursor() as cursor:
            for table, values in rows.items():
                common.insert_rows(cursor, table, values, BUILD_BATCH)
    common.reset_sequences()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def existing_values(kind: Kind, count: int, rng: random.Random) -> list[str]:
    """Up to ``count`` distinct normalised identifiers of ``kind`` from the directory."""
    table = common.TABLES[TABLE_OF[kind]]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MAX(id) FROM {table}")
        top = cursor.fetchone()[0] or 0
        # A few more than needed: shared identifiers come back more than once.
        row_ids = rng.sample(range(1, top + 1), min(count + count // 50 + 10, top))
        values: list[str] = []
        for start in range(0, len(row_ids), 500):
            chunk = row_ids[start : start + 500]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(f"SELECT value FROM {table} WHERE id IN ({marks})", chunk)
            values += [row[0] for row in cursor.fetchall()]
    values = list(dict.fromkeys(values))
    rng.shuffle(values)
    return values[:count]


def series_calls(channel: str, kind: Kind, raw: str, value: str) -> dict[str, Callable[[], Any]]:
    """The three calls of one sample: identify(), the bare query, the ORM query."""
    sql = _lookup_sql(kind)
    chat = kind is Kind.CHAT_ID
    filters = {"channel": channel, "value": value} if chat else {"value": value}
    fields = ("contact__id", "contact__name", "contact__company", "contact__external_id")

    def run_identify() -> str:
        return identify(channel=channel, identifier=raw)["status"]

    def run_bare() -> None:
        params: list[Any] = [channel, value] if chat else [value]
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, CANDIDATE_LIMIT])
            cursor.fetchall()

    def run_orm() -> None:
        query = MODELS[kind].objects.filter(**filters).order_by("contact__name", "contact__id")
        list(query.values_list(*fields)[: CANDIDATE_LIMIT + 1])

    return {"identify": run_identify, "bare SQL": run_bare, "ORM": run_orm}


def measure(
    channel: str, kind: Kind, warmup: list[Pair], samples: list[Pair]
) -> tuple[dict[str, list[int]], Counter[str]]:
    for raw, value in warmup:
        for call in series_calls(channel, kind, raw, value).values():
            call()
    gc.collect()
    times: dict[str, list[int]] = {name: [] for name in ORDERS}
    statuses: Counter[str] = Counter()
    for number, (raw, value) in enumerate(samples):
        calls = series_calls(channel, kind, raw, value)
        for step in range(len(ORDERS)):
            name = ORDERS[(number + step) % len(ORDERS)]
            call = calls[name]
            start = time.perf_counter_ns()
            result = call()
            times[name].append(time.perf_counter_ns() - start)
            if name == "identify":
                statuses[result] += 1
    return times, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n, wanted = args.contacts, args.warmup + args.samples
    rng = random.Random(args.seed)

    database = common.prepare_database()
    started = time.perf_counter()
    if has_directory(n):
        print(f"reusing the directory of {n:,} contacts in {database}")
    else:
        print(f"building a directory of {n:,} contacts in {database} …", flush=True)
        build_directory(n, args.seed)
        print(f"built in {time.perf_counter() - started:.1f} s")

    no_such = [f"no.such.person.{j}@example.com" for j in range(wanted)]
    series = [
        ("webchat email", "webchat", Kind.EMAIL, common.mixed_case, None),
        ("voice phone (digits, no +)", "voice", Kind.PHONE, lambda v, _: v.lstrip("+"), None),
        ("MESSENGER chat id", "MESSENGER", Kind.CHAT_ID, lambda v, _: v, None),
        ("webchat email, unmatched", "webchat", Kind.EMAIL, common.mixed_case, no_such),
    ]
    rows, notes = [], []
    for label, channel, kind, raw_form, values in series:
        values = values or existing_values(kind, wanted, rng)
        pairs = [(raw_form(value, rng), value) for value in values]
        if len(pairs) < wanted:
            notes.append(f"{label}: only {len(pairs):,} distinct identifiers, reused")
            pairs = list(itertools.islice(itertools.cycle(pairs), wanted))
        times, statuses = measure(channel, kind, pairs[: args.warmup], pairs[args.warmup :])
        expected_unmatched = values is no_such
        if (statuses["unmatched"] == args.samples) != expected_unmatched:
            raise SystemExit(f"{label}: unexpected results {dict(statuses)}")
        med = {name: common.median(t) / 1000 for name, t in times.items()}
        top = {name: common.p99(t) / 1000 for name, t in times.items()}
        rows.append(
            [
                label,
                f"{args.samples:,}",
                *(f"{f[name]:.1f}" for name in ("identify", "bare SQL") for f in (med, top)),
                f"{med['identify'] / med['bare SQL']:.2f}",
                f"{top['identify'] / top['bare SQL']:.2f}",
                f"{med['ORM']:.1f}",
                f"{top['ORM']:.1f}",
                ", ".join(f"{status} {count:,}" for status, count in statuses.most_common()),
            ]
        )

    print()
    print(f"identify() latency, µs — {database}")
    print(f"{n:,} contacts, CP_MODE={settings.CP_MODE}, Python {sys.version.split()[0]}")
    print()
    header = ["series", "samples", "identify p50", "p99", "bare SQL p50", "p99",
              "ratio p50", "ratio p99", "ORM p50", "p99", "identify results"]  # fmt: skip
    print(common.table(header, rows))
    for note in notes:
        print(f"note: {note}")
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
