"""The CRM webhook outbox (SPEC §1, CRM-integrated mode).

A row is written in the transaction that identifies (or re-identifies) a
conversation, so the CRM is told about exactly what was committed. The worker
(``crm.worker``) delivers rows one at a time per conversation, in ``id``
order, retrying with capped exponential backoff; rows stay in the database
across restarts until the CRM has answered 2xx.
"""

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


class CrmDelivery(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        # Given up by an admin (a payload the CRM will never accept). It no
        # longer holds back the conversation's later rows.
        ABANDONED = "abandoned"

    # Sent as X-Cpweb-Event-Id on every attempt: the CRM's key to drop a
    # repeat (a worker killed between the CRM's 2xx and recording it resends).
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.CASCADE, related_name="crm_deliveries"
    )
    event = models.CharField(max_length=20)  # identified | updated
    payload = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # A worker that claimed the row owns it until then; if it dies mid-call,
    # another worker takes the row over after this moment.
    leased_until = models.DateTimeField(null=True, blank=True)
    # Also the claim's fencing token: a worker records its result only if no
    # other worker has claimed the row since.
    attempts = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "CRM webhook delivery"
        verbose_name_plural = "CRM webhook deliveries"
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=Q(state="pending"),
                name="crm_delivery_due",
            ),
            models.Index(fields=["conversation", "id"], name="crm_delivery_conversation"),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.conversation_id} ({self.state}, {self.attempts} attempts)"
