"""Reads behind the identification insights admin page: how conversations were
identified, per channel and per day, and which shared identifiers made them
ambiguous.

Everything is counted in the database (GROUP BY channel, day, status), with
days cut in the admin's chosen time zone. A conversation counts once, on the
day it started, with the identity it holds now: a conversation re-identified
after a directory fix counts as what the agent ended up seeing.
"""

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db.models import Case, CharField, Count, F, Max, QuerySet, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import TruncDate

from chat.models import Conversation
from directory.normalize import Kind
from directory.selectors import holder_counts

STATUSES = ("matched", "unmatched", "ambiguous", "withheld")
AMBIGUOUS_LIMIT = 100


@dataclass(frozen=True)
class DayCounts:
    day: date
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class ChannelCounts:
    """One channel's identifications, one entry per day of the range (zeros included)."""

    channel: str
    days: list[DayCounts]
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.totals.values())


@dataclass(frozen=True)
class AmbiguousIdentifier:
    kind: str  # email | phone | chat_id
    channel: str  # the chat id's channel; "" for emails and phone numbers
    value: str
    conversations: int
    last_seen: datetime
    contacts_now: int  # how many directory contacts hold it today

    @property
    def label(self) -> str:
        """How the admin's contact search and the shared-identifier report write it."""
        return f"{self.channel}:{self.value}" if self.channel else self.value


def day_bounds(*, first_day: date, last_day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The instants where ``first_day`` starts and the day after ``last_day`` starts, in ``tz``."""
    start = datetime.combine(first_day, time.min, tzinfo=tz)
    end = datetime.combine(last_day + timedelta(days=1), time.min, tzinfo=tz)
    return start, end


def _started_between(start: datetime, end: datetime) -> QuerySet[Conversation]:
    return Conversation.objects.filter(started_at__gte=start, started_at__lt=end)


def identification_counts(
    *, first_day: date, last_day: date, tz: ZoneInfo
) -> tuple[ChannelCounts, list[ChannelCounts]]:
    """Conversations started from ``first_day`` to ``last_day`` (inclusive, in ``tz``) by
    identity status: all channels together, then each channel that had any (busiest first)."""
    start, end = day_bounds(first_day=first_day, last_day=last_day, tz=tz)
    rows = (
        _started_between(start, end)
        .annotate(
            day=TruncDate("started_at", tzinfo=tz),
            status=KeyTextTransform("status", "identity"),
        )
        .values_list("channel", "day", "status")
        .annotate(conversations=Count("pk"))
        .order_by()
    )
    days = [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]
    grid: dict[str, dict[date, dict[str, int]]] = {}
    for channel, day, status, conversations in rows:
        if status not in STATUSES:
            continue  # not an identity cpweb wrote; nothing to chart it as
        per_day = grid.setdefault(channel, {d: dict.fromkeys(STATUSES, 0) for d in days})
        counts = per_day.get(day)
        if counts is None:
            continue  # the database's zone rules put it outside the range asked for
        counts[status] += conversations
    channels = [_channel_counts(channel, per_day) for channel, per_day in grid.items()]
    channels.sort(key=lambda c: (-c.total, c.channel))
    overall = {d: dict.fromkeys(STATUSES, 0) for d in days}
    for channel_counts in channels:
        for day_counts in channel_counts.days:
            for status, n in day_counts.counts.items():
                overall[day_counts.day][status] += n
    return _channel_counts("all channels", overall), channels


def _channel_counts(channel: str, per_day: dict[date, dict[str, int]]) -> ChannelCounts:
    days = [DayCounts(day, counts) for day, counts in sorted(per_day.items())]
    totals = {status: sum(d.counts[status] for d in days) for status in STATUSES}
    return ChannelCounts(channel, days, totals)


def ambiguous_identifiers(
    *, first_day: date, last_day: date, tz: ZoneInfo, limit: int = AMBIGUOUS_LIMIT
) -> tuple[list[AmbiguousIdentifier], int]:
    """The identifiers that made conversations in the range ambiguous, most conversations
    first (at most ``limit``), with how many there are in all.

    An email or phone number is one identifier whatever channel it arrived on
    (a number that rang on voice and wrote on WhatsApp is one directory
    problem); a chat id is one per channel, as the directory holds it.
    """
    start, end = day_bounds(first_day=first_day, last_day=last_day, tz=tz)
    groups = (
        _started_between(start, end)
        .filter(identity__status="ambiguous")
        .exclude(identifier_value="")
        .annotate(
            chat_channel=Case(
                When(identifier_kind=Kind.CHAT_ID.value, then=F("channel")),
                default=Value(""),
                output_field=CharField(),
            )
        )
        .values_list("identifier_kind", "chat_channel", "identifier_value")
        .annotate(conversations=Count("pk"), last_seen=Max("started_at"))
        .order_by("-conversations", "identifier_kind", "chat_channel", "identifier_value")
    )
    total = groups.count()
    top = list(groups[:limit])
    holders = holder_counts(
        keys=[(Kind(kind), channel or None, value) for kind, channel, value, _, _ in top]
    )
    found = [
        AmbiguousIdentifier(
            kind=kind,
            channel=channel,
            value=value,
            conversations=conversations,
            last_seen=last_seen,
            contacts_now=holders.get((Kind(kind), channel or None, value), 0),
        )
        for kind, channel, value, conversations, last_seen in top
    ]
    return found, total
