"""Admin views of what the channel webhooks could not deliver."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from chat.models import RejectedEmail, SinchOutboundMessage

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
