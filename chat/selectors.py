"""Reads of conversations and messages."""

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from chat.models import Conversation, Message

SNAPSHOT_LIMIT = 1000
RESUME_AFTER_END = timedelta(minutes=10)
HISTORY_LIMIT = 1000


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def with_last_messages(conversations: Iterable[Conversation]) -> list[Conversation]:
    """Set ``last_message`` (a Message or None) on each conversation, in two queries at most.

    The last message is read, not stored: posting a message then costs one
    write, not two.
    """
    conversations = list(conversations)
    if not conversations:
        return conversations
    last_ids = dict(
        Conversation.objects.filter(pk__in=[c.pk for c in conversations])
        .annotate(
            last_id=Subquery(
                Message.objects.filter(conversation=OuterRef("pk")).order_by("-id").values("id")[:1]
            )
        )
        .values_list("pk", "last_id")
    )
    messages = Message.objects.in_bulk([i for i in last_ids.values() if i is not None])
    for conversation in conversations:
        conversation.last_message = messages.get(last_ids.get(conversation.pk))  # type: ignore[attr-defined]
    return conversations


def conversation_for_token(token: str) -> Conversation | None:
    """The web chat conversation a visitor's resume token belongs to: open, or
    ended so recently that a visitor reconnecting still sees how it ended.
    Later the token opens nothing (the transcript is not kept readable by
    whoever finds an old token)."""
    if not token or len(token) > 200:
        return None
    return (
        Conversation.objects.filter(visitor_token_hash=token_hash(token))
        .filter(
            Q(state=Conversation.State.OPEN) | Q(ended_at__gte=timezone.now() - RESUME_AFTER_END)
        )
        .first()
    )


def conversation_get(conversation_id: str) -> Conversation | None:
    try:
        return Conversation.objects.get(pk=conversation_id)
    except (Conversation.DoesNotExist, ValidationError, ValueError, TypeError):
        return None  # no such conversation, or not even a UUID


def open_conversations(*, limit: int = SNAPSHOT_LIMIT) -> list[Conversation]:
    """What a console shows on connect: open conversations, newest first."""
    return with_last_messages(
        Conversation.objects.filter(state=Conversation.State.OPEN).order_by("-started_at")[:limit]
    )


def messages_after(conversation: Conversation, after: int = 0) -> list[Message]:
    return list(
        Message.objects.filter(conversation=conversation, id__gt=after).order_by("id")[
            :HISTORY_LIMIT
        ]
    )


def open_conversations_with_identifiers(values: set[str] | None) -> QuerySet[Conversation]:
    """Open conversations whose normalised identifier is in ``values`` (all if None)."""
    conversations = Conversation.objects.filter(state=Conversation.State.OPEN)
    if values is not None:
        conversations = conversations.filter(identifier_value__in=values)
    return conversations


def identity_changes_since(since: datetime, *, until: datetime) -> list[tuple[str, datetime]]:
    """(id, identity_updated_at) of the open conversations whose identity changed
    after ``since`` and no later than ``until``."""
    changes = Conversation.objects.filter(
        identity_updated_at__gt=since,
        identity_updated_at__lte=until,
        state=Conversation.State.OPEN,
    ).values_list("pk", "identity_updated_at")
    return [(str(pk), stamp) for pk, stamp in changes]


def conversations_with_last_message(ids: Iterable[str]) -> list[Conversation]:
    return with_last_messages(
        Conversation.objects.filter(pk__in=list(ids), state=Conversation.State.OPEN)
    )
