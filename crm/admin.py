"""The outbox in Django admin: what is waiting for the CRM, and why."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from crm.models import CrmDelivery


@admin.register(CrmDelivery)
class CrmDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id", "event", "conversation", "state", "attempts", "last_status", "last_error",
        "next_attempt_at", "delivered_at",
    ]  # fmt: skip
    list_filter = ["state", "event"]
    search_fields = ["=event_id", "=conversation__id"]
    ordering = ["-id"]
    readonly_fields = [f.name for f in CrmDelivery._meta.fields]
    actions = ["retry_now", "abandon"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows are written with the identification, never by hand

    @admin.action(description="Retry now", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[CrmDelivery]) -> None:
        count = queryset.filter(state=CrmDelivery.State.PENDING).update(
            next_attempt_at=timezone.now()
        )
        self.message_user(request, f"{count} pending deliveries will be retried now.")

    @admin.action(
        description="Abandon (stop retrying; lets the conversation's later webhooks go)",
        permissions=["change"],
    )
    def abandon(self, request: HttpRequest, queryset: QuerySet[CrmDelivery]) -> None:
        count = queryset.filter(state=CrmDelivery.State.PENDING).update(
            state=CrmDelivery.State.ABANDONED, leased_until=None
        )
        self.message_user(request, f"{count} deliveries abandoned.", messages.WARNING)
