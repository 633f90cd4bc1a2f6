"""Conversations reaching the contact center, and their messages (SPEC §3, §4)."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Conversation(models.Model):
    class State(models.TextChoices):
        OPEN = "open"
        ENDED = "ended"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    channel = models.CharField(max_length=20)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    # What arrived, kept so the conversation can be identified again when the
    # directory changes: the identifier as received, the name that came with
    # it, and whether the identifier was proven (identity_hash).
    identifier_raw = models.CharField(max_length=320)
    identifier_kind = models.CharField(max_length=10)
    # Normalised and indexed: a directory change finds the open conversations
    # it must re-identify through it. Empty for a withheld caller.
    identifier_value = models.CharField(max_length=320, blank=True)
    name = models.CharField(max_length=200, blank=True)
    verified = models.BooleanField(default=False)
    identity = models.JSONField(default=dict)
    identity_updated_at = models.DateTimeField(default=timezone.now, db_index=True)
    # sha256 of the visitor's resume token; the token itself is never stored.
    visitor_token_hash = models.CharField(max_length=64, blank=True, db_index=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["state", "identifier_kind", "identifier_value"]),
            models.Index(fields=["state", "-started_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.identifier_value or '(withheld)'} {self.state}"


class Message(models.Model):
    class Sender(models.TextChoices):
        VISITOR = "visitor"
        AGENT = "agent"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    sender = models.CharField(max_length=10, choices=Sender.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    text = models.TextField()
    sent_at = models.DateTimeField(default=timezone.now)
    # The sender's own id for the message: a resend after a lost ack returns
    # the stored message instead of storing it twice.
    client_msg_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["conversation", "id"])]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "sender", "client_msg_id"],
                condition=~Q(client_msg_id=""),
                name="message_client_msg_id_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.sender}: {self.text[:40]}"
