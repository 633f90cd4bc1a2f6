"""Admin views of what the channel webhooks could not deliver, and the
identification insights page."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html

from chat import insights
from chat.charts import STATUS_COLOURS, stacked_bar_chart
from chat.forms import InsightsRangeForm, insights_default_range
from chat.insights import STATUSES
from chat.models import RejectedEmail, SinchOutboundMessage

INSIGHTS_PERMISSION = "chat.view_identification_insights"

RAW_PREVIEW_CHARS = 20_000


@admin.register(RejectedEmail)
class RejectedEmailAdmin(admin.ModelAdmin):
    """Inbound emails refused as malformed, kept whole so nothing is lost."""

    list_display = ["received_at", "reason_code", "reason", "size"]
    list_filter = ["reason_code"]
    fields = ["received_at", "reason_code", "reason", "size", "raw_message"]
    readonly_fields = ["received_at", "reason_code", "reason", "size", "raw_message"]

    @admin.display(description="raw message")
    def raw_message(self, rejected: RejectedEmail) -> str:
        text = bytes(rejected.raw).decode("utf-8", "replace")
        more = len(text) > RAW_PREVIEW_CHARS
        return format_html(
            '<pre style="white-space: pre-wrap">{}{}</pre>',
            text[:RAW_PREVIEW_CHARS],
            "\n… (truncated)" if more else "",
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    actions = ["download_raw"]

    @admin.action(description="Download the raw message (.eml) of the first selected")
    def download_raw(
        self, request: HttpRequest, queryset: QuerySet[RejectedEmail]
    ) -> HttpResponse | None:
        rejected = queryset.first()
        if rejected is None:
            return None
        response = HttpResponse(bytes(rejected.raw), content_type="message/rfc822")
        response["Content-Disposition"] = f'attachment; filename="rejected-{rejected.pk}.eml"'
        return response


@admin.register(SinchOutboundMessage)
class SinchOutboundMessageAdmin(admin.ModelAdmin):
    """Agent replies sent (or not) through the Conversation API."""

    list_display = ["message", "state", "attempts", "sinch_message_id", "updated_at"]
    list_filter = ["state"]
    readonly_fields = ["message", "state", "attempts", "sinch_message_id", "error", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


def identification_insights_view(request: HttpRequest) -> HttpResponse:
    """How conversations were identified, per channel and day, and the shared
    identifiers that made them ambiguous (wired as ``/admin/insights/``)."""
    if not request.user.has_perm(INSIGHTS_PERMISSION):
        raise PermissionDenied
    first, last, tz = insights_default_range()
    form = InsightsRangeForm(
        request.GET or None, initial={"first": first, "last": last, "tz": tz.key}
    )
    if form.is_bound and form.is_valid():
        chosen = form.cleaned_data
        first, last, tz = chosen["first"], chosen["last"], chosen["tz"]
    overall, channels = insights.identification_counts(first_day=first, last_day=last, tz=tz)
    # The identifiers are personal data: listed only to those who may see contacts.
    may_view_contacts = request.user.has_perm("directory.view_contact")
    ambiguous, ambiguous_total = (
        insights.ambiguous_identifiers(first_day=first, last_day=last, tz=tz)
        if may_view_contacts
        else ([], 0)
    )
    return TemplateResponse(
        request,
        "admin/chat/insights.html",
        {
            **admin.site.each_context(request),
            "title": "Identification insights",
            "form": form,
            "first": first,
            "last": last,
            "tz": tz.key,
            "statuses": STATUSES,
            "colours": STATUS_COLOURS,
            "overall": overall,
            "overall_chart": stacked_bar_chart(overall),
            "channels": [(counts, stacked_bar_chart(counts)) for counts in channels],
            "may_view_contacts": may_view_contacts,
            "ambiguous": ambiguous,
            "ambiguous_total": ambiguous_total,
        },
    )
