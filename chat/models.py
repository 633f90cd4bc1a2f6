"""Conversations reaching the contact center, and their messages (SPEC §3, §4)."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


def storable_text(value: str) -> str:
    """``value`` without NUL characters, which PostgreSQL text cannot hold (a
    NUL from a socket or a webhook was a 500 there, found by fuzzing)."""
    return value.replace("\x00", "")


class CallState(models.TextChoices):
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


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
    # Voice only: where the call is (SPEC's ``state`` is only open | ended).
    call_state = models.CharField(max_length=10, choices=CallState.choices, blank=True)
    # Email only: the subject of the message that started the thread.
    subject = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-started_at"]
        permissions = [
            ("view_identification_insights", "Can view identification insights"),
        ]
        indexes = [
            models.Index(fields=["state", "identifier_kind", "identifier_value"]),
            models.Index(fields=["state", "-started_at"]),
            # The insights page counts conversations started in a range of days.
            models.Index(fields=["started_at"], name="conversation_started_at"),
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


# --- Channels that arrive through webhooks (SPEC §5) ---------------------------


class SinchLink(models.Model):
    """A Conversation API conversation: how its customer is reached again, and
    which open conversation their next message continues."""

    conversation = models.OneToOneField(
        Conversation, on_delete=models.CASCADE, primary_key=True, related_name="sinch"
    )
    # "CHANNEL:normalised identity" while the conversation is open, cleared
    # when it ends: unique, so two messages arriving at once from one customer
    # cannot open two conversations.
    open_key = models.CharField(max_length=360, null=True, blank=True, unique=True)
    project_id = models.CharField(max_length=100, blank=True)
    app_id = models.CharField(max_length=100, blank=True)
    contact_id = models.CharField(max_length=100, blank=True, db_index=True)
    sinch_conversation_id = models.CharField(max_length=100, blank=True, db_index=True)
    channel = models.CharField(max_length=20)
    identity = models.CharField(max_length=320)

    def __str__(self) -> str:
        return f"{self.channel}:{self.identity}"


class SinchContactName(models.Model):
    """The name a messaging platform holds for a Sinch contact, cached.

    ``channel`` is empty for the contact's ``display_name`` and names a
    channel for a channel profile's ``profile_name``. An empty ``name`` records
    that the platform had none, so it is not asked again at once.
    """

    contact_id = models.CharField(max_length=100)
    channel = models.CharField(max_length=20, blank=True)
    name = models.CharField(max_length=200, blank=True)
    fetched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["contact_id", "channel"], name="sinch_contact_name_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} {self.channel or 'contact'}: {self.name}"


class SinchOutboundMessage(models.Model):
    """An agent's reply on its way through the Conversation API's send-message endpoint."""

    class State(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    message = models.OneToOneField(
        Message, on_delete=models.CASCADE, primary_key=True, related_name="sinch_outbound"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    sinch_message_id = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"reply {self.message_id}: {self.state}"


class WebhookNonce(models.Model):
    """Nonces of signed Sinch callbacks seen within the freshness window.

    In the database, not in memory: a replay sent to another process (or
    after a restart) is refused too. Rows older than the window are pruned.
    """

    nonce = models.CharField(max_length=200, unique=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.nonce


class VoiceCall(models.Model):
    """A Sinch Voice call and the conversation it opened."""

    call_id = models.CharField(max_length=100, unique=True)
    conversation = models.OneToOneField(
        Conversation, on_delete=models.CASCADE, related_name="voice_call"
    )
    cli = models.CharField(max_length=100, blank=True)
    to_endpoint = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=10, choices=CallState.choices, default=CallState.RINGING)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"call {self.call_id} from {self.cli or '(withheld)'}"


class InboundEmail(models.Model):
    """One received email: threads replies (Message-ID) and ignores redeliveries."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="emails")
    message = models.OneToOneField(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="email"
    )
    # The Message-ID header without angle brackets; null when there was none.
    header_message_id = models.CharField(max_length=995, null=True, blank=True, unique=True)
    subject = models.CharField(max_length=300, blank=True)
    from_header = models.CharField(max_length=400, blank=True)
    received_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.from_header}: {self.subject}"


class RejectedEmail(models.Model):
    """An inbound email that could not be read, kept whole for an admin to inspect."""

    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    reason_code = models.CharField(max_length=40)
    reason = models.TextField()
    raw = models.BinaryField()
    size = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.received_at:%Y-%m-%d %H:%M} {self.reason_code}"
