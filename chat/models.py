"""Conversations reaching the contact center, on any channel (SPEC §4).

The web chat and channel issues fill these in; the model exists from the start
because agents are granted ``chat.view_conversation`` to use the console.
"""

import uuid

from django.db import models
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
    # The normalised identifier, indexed so a directory change finds the open
    # conversations it must re-identify.
    identifier_kind = models.CharField(max_length=10)
    identifier_value = models.CharField(max_length=320, blank=True)
    identity = models.JSONField(default=dict)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["state", "identifier_kind", "identifier_value"]),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.identifier_value or '(withheld)'} {self.state}"
