"""Reads of conversations and messages."""

import hashlib
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from chat.models import Conversation, Message

SNAPSHOT_LIMIT = 1000
HISTORY_LIMIT = 1000


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def conversation_for_token(token: str) -> Conversation | None:
    """The web chat conversation a visitor's resume token belongs to."""
    if not token or len(token) > 200:
        return None
    return (
        Conversation.objects.select_related("last_message")
        .filter(visitor_token_hash=token_hash(token))
        .first()
    )


def conversation_get(conversation_id: str) -> Conversation | None:
    try:
        return Conversation.objects.select_related("last_message").get(pk=conversation_id)
    except (Conversation.DoesNotExist, ValidationError, ValueError, TypeError):
        return None  # no such conversation, or not even a UUID


def open_conversations(*, limit: int = SNAPSHOT_LIMIT) -> list[Conversation]:
    """What a console shows on connect: open conversations, newest first."""
    return list(
        Conversation.objects.select_related("last_message")
        .filter(state=Conversation.State.OPEN)
        .order_by("-started_at")[:limit]
    )


def messages_after(conversation: Conversation, after: int = 0) -> list[Message]:
    return list(conversation.messages.filter(id__gt=after).order_by("id")[:HISTORY_LIMIT])


def open_conversations_with_identifiers(values: set[str] | None) -> QuerySet[Conversation]:
    """Open conversations whose normalised identifier is in ``values`` (all if None)."""
    conversations = Conversation.objects.filter(state=Conversation.State.OPEN)
    if values is not None:
        conversations = conversations.filter(identifier_value__in=values)
    return conversations.select_related("last_message")


def conversations_with_identity_changed_since(since: datetime) -> list[Conversation]:
    return list(
        Conversation.objects.select_related("last_message").filter(
            identity_updated_at__gt=since, state=Conversation.State.OPEN
        )
    )
