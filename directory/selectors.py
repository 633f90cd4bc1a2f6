"""Reads of the contact directory."""

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from directory.models import Contact, ContactChatId, ContactEmail, ContactPhone
from directory.normalize import (
    IdentifierError,
    Kind,
    name_keys,
    names_agree,
    normalize_chat_channel,
    normalize_chat_id,
    normalize_email,
    phone_search_values,
)

CANDIDATE_LIMIT = 20

_IDENTIFIER_MODELS: dict[Kind, type[ContactEmail] | type[ContactPhone] | type[ContactChatId]] = {
    Kind.EMAIL: ContactEmail,
    Kind.PHONE: ContactPhone,
    Kind.CHAT_ID: ContactChatId,
}


@dataclass(frozen=True, slots=True)
class ContactRow:
    id: int
    name: str
    company: str
    external_id: str


@cache
def _lookup_sql(kind: Kind) -> str:
    identifiers = _IDENTIFIER_MODELS[kind]._meta.db_table
    contacts = Contact._meta.db_table
    where = "i.channel = %s AND i.value = %s" if kind is Kind.CHAT_ID else "i.value = %s"
    # The window count gives the total number of matches in the same query
    # that returns the first few; it is evaluated before LIMIT.
    return (
        f"SELECT c.id, c.name, c.company, c.external_id, COUNT(*) OVER () "  # noqa: S608
        f"FROM {identifiers} i JOIN {contacts} c ON c.id = i.contact_id "
        f"WHERE {where} ORDER BY c.name, c.id LIMIT %s"
    )


def contacts_by_identifier(
    *, kind: Kind, value: str, channel: str | None = None, limit: int = CANDIDATE_LIMIT
) -> tuple[list[ContactRow], int]:
    """The contacts holding a normalised identifier (at most ``limit``) and their total.

    The identification hot path: one indexed query. It is written as SQL
    rather than through the ORM because building the ORM query costs several
    times the query itself (see bench/identify_bench.py).
    """
    params: list[str | int | None] = [channel, value] if kind is Kind.CHAT_ID else [value]
    with connection.cursor() as cursor:
        cursor.execute(_lookup_sql(kind), [*params, limit])
        rows = cursor.fetchall()
    total = rows[0][4] if rows else 0
    return [ContactRow(r[0], r[1], r[2], r[3]) for r in rows], total


def contacts_by_name(*, name: str, limit: int = CANDIDATE_LIMIT) -> list[tuple[ContactRow, str]]:
    """Contacts whose name agrees with ``name``, each with the reason it agrees."""
    keys = [key for key in name_keys(name) if key]
    if not keys:
        return []
    found = Contact.objects.filter(Q(name_key__in=keys) | Q(name_short_key__in=keys)).values_list(
        "id", "name", "company", "external_id"
    )[: limit * 5]
    matches = []
    for contact_id, contact_name, company, external_id in found:
        reason = names_agree(name, contact_name)
        if reason:
            matches.append((ContactRow(contact_id, contact_name, company, external_id), reason))
    return matches[:limit]


# --- Admin ------------------------------------------------------------------


def _contact_ids_sharing(
    model: type[ContactEmail] | type[ContactPhone] | type[ContactChatId],
) -> QuerySet[Any]:
    fields = ["channel", "value"] if model is ContactChatId else ["value"]
    twin = model.objects.filter(**{f: OuterRef(f) for f in fields}).exclude(
        contact_id=OuterRef("contact_id")
    )
    return model.objects.filter(Exists(twin)).values("contact_id")


def contacts_sharing_identifiers() -> QuerySet[Contact]:
    """Contacts holding an identifier that another contact holds too."""
    return Contact.objects.filter(
        Q(pk__in=_contact_ids_sharing(ContactEmail))
        | Q(pk__in=_contact_ids_sharing(ContactPhone))
        | Q(pk__in=_contact_ids_sharing(ContactChatId))
    )


@dataclass(frozen=True)
class SharedIdentifier:
    kind: Kind
    label: str
    contacts: list[Contact]
    total: int


def shared_identifiers(*, limit: int = 500) -> tuple[list[SharedIdentifier], int]:
    """Every identifier held by several contacts (the first ``limit``), and how many there are."""
    shared: list[SharedIdentifier] = []
    count = 0
    for kind, model in _IDENTIFIER_MODELS.items():
        fields = ["channel", "value"] if kind is Kind.CHAT_ID else ["value"]
        groups = (
            model.objects.values(*fields)
            .annotate(holders=Count("contact_id"))
            .filter(holders__gt=1)
            .order_by("-holders", *fields)
        )
        count += groups.count()
        for group in groups[: max(0, limit - len(shared))]:
            filters = {f: group[f] for f in fields}
            holders = model.objects.filter(**filters).select_related("contact")
            contacts = [row.contact for row in holders.order_by("contact__name")[:CANDIDATE_LIMIT]]
            label = ":".join(str(group[f]) for f in fields)
            shared.append(SharedIdentifier(kind, label, contacts, group["holders"]))
    return shared, count


IdentifierKey = tuple[Kind, str | None, str]  # kind, chat id channel (else None), value


def holder_counts(*, keys: list[IdentifierKey]) -> dict[IdentifierKey, int]:
    """How many contacts hold each normalised identifier today: one grouped query per kind."""
    wanted = set(keys)
    found: list[tuple[IdentifierKey, int]] = []
    for kind, model in ((Kind.EMAIL, ContactEmail), (Kind.PHONE, ContactPhone)):
        values = {value for k, _, value in wanted if k is kind}
        if values:
            grouped = model.objects.filter(value__in=values).values_list("value")
            found += [
                ((kind, None, str(value)), holders)
                for value, holders in grouped.annotate(n=Count("contact_id")).order_by()
            ]
    chat_keys = {(channel, value) for k, channel, value in wanted if k is Kind.CHAT_ID}
    if chat_keys:
        chat_groups = ContactChatId.objects.filter(
            channel__in={c for c, _ in chat_keys}, value__in={v for _, v in chat_keys}
        ).values_list("channel", "value")
        found += [
            ((Kind.CHAT_ID, channel, value), holders)
            for channel, value, holders in chat_groups.annotate(n=Count("contact_id")).order_by()
        ]
    return {key: holders for key, holders in found if key in wanted}


def contact_ids_for_search(term: str) -> set[int]:
    """Contacts holding an identifier that ``term`` denotes, in whatever format it was typed."""
    term = term.strip()
    ids: set[int] = set()
    if not term:
        return ids
    if "@" in term:
        try:
            email = normalize_email(term)
        except IdentifierError:
            pass
        else:
            ids |= set(
                ContactEmail.objects.filter(value=email).values_list("contact_id", flat=True)
            )
    regions = [settings.CP_DEFAULT_REGION, *contact_countries()]
    numbers = phone_search_values(term, regions)
    if numbers:
        ids |= set(
            ContactPhone.objects.filter(value__in=numbers).values_list("contact_id", flat=True)
        )
    chat = Q()
    channel, sep, value = term.partition(":")
    try:
        if sep:
            chat = Q(channel=normalize_chat_channel(channel), value=normalize_chat_id(value))
        else:
            chat = Q(value=normalize_chat_id(term))
    except IdentifierError:
        pass
    if chat:
        ids |= set(ContactChatId.objects.filter(chat).values_list("contact_id", flat=True))
    return ids


def contact_countries() -> list[str]:
    return list(
        Contact.objects.exclude(country="").order_by().values_list("country", flat=True).distinct()
    )


# --- Export -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContactExport:
    external_id: str
    name: str
    company: str
    country: str
    emails: list[str]
    phones: list[str]
    chat_ids: list[str]


def contacts_for_export(
    queryset: QuerySet[Contact] | None = None, *, batch_size: int = 2000
) -> Iterator[ContactExport]:
    """Contacts with their identifiers, streamed in batches of ``batch_size``."""
    queryset = (queryset if queryset is not None else Contact.objects.all()).order_by("id")
    last_id = 0
    while True:
        batch = list(
            queryset.filter(id__gt=last_id).values_list(
                "id", "external_id", "name", "company", "country"
            )[:batch_size]
        )
        if not batch:
            return
        ids = [row[0] for row in batch]
        emails = _values_by_contact(ContactEmail, ids, "value")
        phones = _values_by_contact(ContactPhone, ids, "value")
        chats = _values_by_contact(ContactChatId, ids, "channel", "value")
        for contact_id, external_id, name, company, country in batch:
            yield ContactExport(
                external_id=external_id,
                name=name,
                company=company,
                country=country,
                emails=emails.get(contact_id, []),
                phones=phones.get(contact_id, []),
                chat_ids=chats.get(contact_id, []),
            )
        last_id = ids[-1]


def _values_by_contact(
    model: type[ContactEmail] | type[ContactPhone] | type[ContactChatId],
    ids: list[int],
    *fields: str,
) -> dict[int, list[str]]:
    # A raw cursor keeps phone numbers as the stored E.164 text instead of
    # parsing each one back into a PhoneNumber object.
    table = model._meta.db_table
    columns = ", ".join(fields)
    placeholders = ", ".join(["%s"] * len(ids))
    result: dict[int, list[str]] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT contact_id, {columns} FROM {table} "  # noqa: S608
            f"WHERE contact_id IN ({placeholders}) ORDER BY id",
            ids,
        )
        for contact_id, *values in cursor.fetchall():
            result.setdefault(contact_id, []).append(":".join(values))
    return result
