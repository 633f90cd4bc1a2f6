"""Writes to conversations: start, post a message, end, re-identify.

Each function writes in one transaction and announces the change through
``chat.events``, which pushes it once the transaction commits.
"""

import secrets
from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.utils import timezone

from chat import events
from chat.models import Conversation, Message
from chat.selectors import open_conversations_with_identifiers, token_hash, with_last_messages
from directory.identify import identify
from directory.normalize import IdentifierError

# Past this many changed identifiers, re-identifying every open conversation
# is cheaper than matching them one by one.
REIDENTIFY_ALL_THRESHOLD = 1000


def conversation_start(
    *, channel: str, identifier: str, name: str | None = None, verified: bool = False
) -> tuple[Conversation, str]:
    """Open a conversation, identify its customer, tell the consoles.

    Returns the conversation and the visitor's resume token (stored only as
    a hash). Raises IdentifierError for an invalid identifier.
    """
    identity = identify(channel=channel, identifier=identifier, name=name, verified=verified)
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        conversation = Conversation.objects.create(
            channel=identity["identifier"]["channel"],
            identifier_raw=identifier,
            identifier_kind=identity["identifier"]["kind"],
            identifier_value=identity["identifier"]["value"] or "",
            name=name or "",
            verified=identity["verified"],
            identity=identity,
            visitor_token_hash=token_hash(token),
        )
        events.conversation_changed(conversation, "started")
        events.conversation_changed(conversation, "identified")
    return conversation, token


def message_post(
    *,
    conversation: Conversation,
    sender: str,
    text: str,
    client_msg_id: str = "",
    author_id: int | None = None,
) -> Message:
    """Store a message (once per client_msg_id) and push it after commit."""
    try:
        with transaction.atomic():
            message = Message.objects.create(
                conversation=conversation,
                sender=sender,
                author_id=author_id,
                text=text,
                client_msg_id=client_msg_id,
            )
            events.message_posted(message)
    except IntegrityError:
        # A resend after a lost ack (or a race from a second socket): the
        # message is stored already; answer with it.
        return Message.objects.get(
            conversation=conversation, sender=sender, client_msg_id=client_msg_id
        )
    return message


def conversation_end(*, conversation: Conversation) -> Conversation:
    with transaction.atomic():
        updated = Conversation.objects.filter(
            pk=conversation.pk, state=Conversation.State.OPEN
        ).update(state=Conversation.State.ENDED, ended_at=timezone.now())
        conversation.refresh_from_db()
        with_last_messages([conversation])
        if updated:
            events.conversation_changed(conversation, "ended")
    return conversation


def conversations_reidentify(*, identifiers: Iterable[str] | None) -> int:
    """Identify open conversations again after a directory change; push those that changed.

    ``identifiers`` are the normalised values the change touched (None: any).
    Returns how many conversations changed identity.
    """
    values = None if identifiers is None else set(identifiers)
    if values is not None and len(values) > REIDENTIFY_ALL_THRESHOLD:
        values = None
    if values is not None and not values:
        return 0
    changed = 0
    for conversation in open_conversations_with_identifiers(values).iterator(chunk_size=500):
        try:
            identity = identify(
                channel=conversation.channel,
                identifier=conversation.identifier_raw,
                name=conversation.name or None,
                verified=conversation.verified,
            )
        except IdentifierError:
            continue  # rules changed under a stored conversation: keep what it had
        if identity == conversation.identity:
            continue
        with_last_messages([conversation])
        with transaction.atomic():
            conversation.identity = identity
            conversation.identity_updated_at = timezone.now()
            conversation.save(update_fields=["identity", "identity_updated_at"])
            events.conversation_changed(conversation, "updated")
        changed += 1
    return changed
