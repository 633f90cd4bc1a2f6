"""What both benchmarks share: a throw-away database, Django set-up, synthetic contacts.

The benchmarks never touch the developer's database. Unless ``DATABASE_URL``
names a PostgreSQL database (CI passes ``postgres://…/cpweb_bench``), each
script uses its own SQLite file ``bench/out/<script>.sqlite3``. Whenever a
benchmark needs an empty directory it recreates that file, or drops and
recreates the PostgreSQL database, which must therefore have "bench" in its
name.
"""

import os
import random
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"


def setup_django(name: str) -> None:
    """Point Django at the benchmark database and set it up (no connection yet)."""
    OUT.mkdir(exist_ok=True)
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        os.environ["DATABASE_URL"] = f"sqlite:///{OUT / name}.sqlite3"
    elif "bench" not in urlsplit(url).path:
        # The benchmarks drop and recreate the database: never a real one.
        raise SystemExit(f"DATABASE_URL must name a database called *bench* (got {url!r})")
    os.environ.setdefault("CPWEB_VAR_DIR", str(OUT / "var"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "cpweb.settings"
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def _create_pg_database(*, drop: bool) -> None:
    """Create the PostgreSQL database if missing (``drop``: drop it first)."""
    import psycopg
    from django.db import connection
    from psycopg import sql

    params = connection.settings_dict
    name = sql.Identifier(params["NAME"])
    connection.close()
    with psycopg.connect(
        dbname="postgres",
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        user=params["USER"] or None,
        password=params["PASSWORD"] or None,
        autocommit=True,
    ) as admin:
        if drop:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        exists = "SELECT 1 FROM pg_database WHERE datname = %s"
        if not admin.execute(exists, [params["NAME"]]).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(name))


def prepare_database() -> str:
    """Create the PostgreSQL database if it is missing, migrate; a one-line description."""
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "postgresql":
        _create_pg_database(drop=False)
    call_command("migrate", verbosity=0)
    if connection.vendor == "postgresql":
        major, minor = divmod(getattr(connection, "pg_version", 0), 10_000)
        return f"PostgreSQL {major}.{minor} (database {connection.settings_dict['NAME']})"
    import sqlite3

    return f"SQLite {sqlite3.sqlite_version} ({connection.settings_dict['NAME']})"


def reset_directory() -> None:
    """An empty directory in a freshly migrated database (a new SQLite file or PG database).

    Starting from scratch rather than deleting rows also keeps a benchmark
    database from going stale when a migration is edited.
    """
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "sqlite":
        path = Path(connection.settings_dict["NAME"])
        connection.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        _create_pg_database(drop=True)
    call_command("migrate", verbosity=0)


def reset_sequences() -> None:
    """After inserting explicit ids, let PostgreSQL hand out the next ones (no-op on SQLite)."""
    from django.core.management.color import no_style
    from django.db import connection

    from directory.models import Contact, ContactChatId, ContactEmail, ContactPhone

    models = [Contact, ContactEmail, ContactPhone, ContactChatId]
    statements = connection.ops.sequence_reset_sql(no_style(), models)
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


TABLES = {
    "contact": "directory_contact",
    "email": "directory_contactemail",
    "phone": "directory_contactphone",
    "chat": "directory_contactchatid",
}
INSERT_SQL = {
    "contact": f"INSERT INTO {TABLES['contact']} (id, name, company, country, external_id, "
    "name_key, name_short_key, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
    "email": f"INSERT INTO {TABLES['email']} (contact_id, value) VALUES (%s, %s)",
    "phone": f"INSERT INTO {TABLES['phone']} (contact_id, value) VALUES (%s, %s)",
    "chat": f"INSERT INTO {TABLES['chat']} (contact_id, channel, value) VALUES (%s, %s, %s)",
}


def insert_rows(cursor: Any, table: str, rows: list[tuple[Any, ...]], batch_size: int) -> None:
    for start in range(0, len(rows), batch_size):
        cursor.executemany(INSERT_SQL[table], rows[start : start + batch_size])


# --- Synthetic contacts -----------------------------------------------------

# Mobile ranges in which every number of the given length is valid for
# phonenumbers 9.0 (checked for every number of the first 2 million contacts,
# and a 200,000-number sample up to 10 million): prefix, how many numbers,
# first serial, digits after the prefix. US: 202-NXX-XXXX with NXX >= 200.
PHONE_RANGES = {
    "SE": ("+4670", 10**7, 0, 7),
    "GB": ("+44790", 10**7, 0, 7),
    "US": ("+1202", 8 * 10**6, 2 * 10**6, 7),
    "DE": ("+49151", 10**8, 0, 8),
    "FR": ("+3360", 10**7, 0, 7),
    "NL": ("+3161", 10**7, 0, 7),
    "NO": ("+4740", 10**6, 0, 6),
    "ES": ("+346", 10**8, 0, 8),
    "IT": ("+39347", 10**7, 0, 7),
    "AU": ("+61400", 10**6, 0, 6),
}
COUNTRIES = list(PHONE_RANGES)
MAX_CONTACTS = len(COUNTRIES) * min(size for _, size, _, _ in PHONE_RANGES.values())

# fmt: off
FIRST = ["Anna", "Erik", "Åsa", "Jürgen", "Chloé", "Oliver", "María", "Lars", "Siobhán", "Luca",
         "Sofia", "James", "Noah", "Emma", "Björn", "Zoë", "Mateo", "Ingrid", "Amelia", "Jan"]
LAST = ["Svensson", "Müller", "O'Connor", "García", "Rossi", "de Vries", "Hughes", "Dubois",
        "Lindqvist", "Carter", "Nilsen", "Smith", "Öberg", "Jensen", "Fernández", "Brown"]
# fmt: on
MIDDLE = ["Maria", "Johan", "Louise", "Peter"]
COMPANIES = ["", "", "Nordic Bikes AB", "Carter Logistics", "Atelier Dubois", "Acme Ltd"]
DOMAINS = ["gmail.com", "outlook.com", "telia.se", "web.de", "orange.fr", "example.co.uk"]


@dataclass(frozen=True, slots=True)
class Person:
    id: int  # also the contact's database id
    external_id: str
    name: str
    company: str
    country: str
    email: str  # normalised (lower case)
    phone: str  # E.164
    chat_id: str | None  # MESSENGER id, every 10th contact


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and c.isalnum())


def phone_number(index: int) -> tuple[str, str]:
    """(country, E.164) of contact ``index``: unique, spread pseudo-randomly over the range."""
    country = COUNTRIES[index % len(COUNTRIES)]
    prefix, size, first, digits = PHONE_RANGES[country]
    serial = (index // len(COUNTRIES) * 7_654_321 + 12_345) % size  # a bijection on the range
    return country, f"{prefix}{first + serial:0{digits}d}"


def people(n: int, *, prefix: str, seed: int, shared: bool) -> Iterator[Person]:
    """``n`` deterministic contacts, ids 1..n, every identifier unique unless ``shared``.

    With ``shared``, one email in a thousand belongs to 2 or 3 contacts, and
    likewise one phone number and one chat id in a thousand.
    """
    if n > MAX_CONTACTS:
        raise SystemExit(f"at most {MAX_CONTACTS:,} contacts have unique phone numbers")
    rng = random.Random(seed)
    leader: dict[str, str] = {}
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        middle = f" {rng.choice(MIDDLE)}" if rng.random() < 0.1 else ""
        country, phone = phone_number(i)
        email = f"{_ascii(first)}.{_ascii(last)}.{i}@{rng.choice(DOMAINS)}".lower()
        chat = f"27{(i * 7_919 + 1_234_567) % 10**14:014d}" if i % 10 == 0 else None
        if shared:
            email = _share(leader, "email", email, i % 1000, i % 2000)
            phone = _share(leader, "phone", phone, (i + 500) % 1000, (i + 500) % 2000)
            if chat:
                chat = _share(leader, "chat", chat, i % 10_000 // 10, i % 20_000 // 10)
        yield Person(
            id=i + 1,
            external_id=f"{prefix}{i:07d}",
            name=f"{first}{middle} {last}",
            company=rng.choice(COMPANIES),
            country=country,
            email=email,
            phone=phone,
            chat_id=chat,
        )


def mixed_case(text: str, rng: random.Random) -> str:
    """``text`` with each letter upper-cased at random, as people type addresses."""
    return "".join(c.upper() if rng.random() < 0.5 else c for c in text)


def _share(leader: dict[str, str], kind: str, value: str, slot: int, slot2: int) -> str:
    """Slot 0 leads a group; slot 1 (and slot 2 every other group) hold the leader's value."""
    if slot == 0:
        leader[kind] = value
    elif (slot == 1 or slot2 == 2) and kind in leader:
        return leader[kind]
    return value


# --- Statistics ---------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def p99(values: Sequence[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[col]) for row in [header, *rows]) for col in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if col == 0 else cell.rjust(w)
            for col, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in lines
    )
