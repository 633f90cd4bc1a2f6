"""The range an admin picks on the identification insights page."""

import zoneinfo
from datetime import date, timedelta
from functools import cache

from django import forms
from django.conf import settings
from django.utils import timezone

DEFAULT_DAYS = 30
MAX_DAYS = 366


@cache
def _time_zone_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in sorted(zoneinfo.available_timezones())]


class InsightsRangeForm(forms.Form):
    """``first`` and ``last`` day (inclusive) and the time zone the days are cut in.

    Every field is optional: left out, the page shows the last 30 days in
    ``TIME_ZONE``.
    """

    first = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    last = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    tz = forms.ChoiceField(label="Time zone", required=False, choices=_time_zone_choices)

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        default_tz = zoneinfo.ZoneInfo(settings.TIME_ZONE)
        tz = zoneinfo.ZoneInfo(cleaned["tz"]) if cleaned.get("tz") else default_tz
        last: date = cleaned.get("last") or timezone.now().astimezone(tz).date()
        first: date = cleaned.get("first") or last - timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            raise forms.ValidationError("The first day must not be after the last day.")
        if (last - first).days + 1 > MAX_DAYS:
            raise forms.ValidationError(f"Pick at most {MAX_DAYS} days.")
        return {"first": first, "last": last, "tz": tz}


def insights_default_range() -> tuple[date, date, zoneinfo.ZoneInfo]:
    """The last 30 days, today included, in ``TIME_ZONE``."""
    tz = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    last = timezone.now().astimezone(tz).date()
    return last - timedelta(days=DEFAULT_DAYS - 1), last, tz
