"""Every push to a console or a visitor goes through this module (SPEC §3, §4).

A change is serialised once, here, into the exact frames the sockets receive,
and published after the surrounding transaction commits, so nobody is told
about something that was rolled back. Publishing goes through the channel
layer to one hub per process (``chat.hub``), which writes the frames to its
local sockets: one serialisation and one channel-layer delivery per event and
process, however many consoles are open.
"""

import json
import logging
import time
from datetime import UTC, datetime
from typing import Literal, NotRequired, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chat.models import Conversation, Message
from chat.selectors import open_conversations
from directory.identify import Identity, crm_identifier
from directory.normalize import Kind

log = logging.getLogger(__name__)

HUB_GROUP = "cpweb.hub"
LifecycleEvent = Literal["started", "identified", "updated", "ended"]


class MessagePayload(TypedDict):
    message_id: int
    sender: str
    text: str
    sent_at: str


class ConversationPayload(TypedDict):
    id: str
    channel: str
    state: str
    started_at: str
    identity: Identity
    last_message: MessagePayload | None
    # Beyond SPEC §4: a voice call's ringing | answered | ended, an email's subject.
    call_state: NotRequired[str]
    subject: NotRequired[str]


class HubEvent(TypedDict):
    type: str  # hub.conversation | hub.message
    conversation_id: str
    console: str  # the frame for consoles
    visitor: str | None  # the frame for the conversation's visitor sockets, if any
    identity_updated_at: NotRequired[str]
    # time.time() when the change committed: the hub measures push latency from it.
    committed_at: NotRequired[float]


def timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with a fixed width, so that timestamps also compare as strings."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def message_payload(message: Message) -> MessagePayload:
    return {
        "message_id": message.pk,
        "sender": message.sender,
        "text": message.text,
        "sent_at": timestamp(message.sent_at),
    }


def conversation_payload(conversation: Conversation) -> ConversationPayload:
    """The SPEC §4 Conversation. ``last_message`` is whatever a selector set on
    the object (``chat.selectors.with_last_messages``); a new one has none."""
    last: Message | None = getattr(conversation, "last_message", None)
    payload: ConversationPayload = {
        "id": str(conversation.pk),
        "channel": conversation.channel,
        "state": conversation.state,
        "started_at": timestamp(conversation.started_at),
        "identity": identity_for_mode(conversation.identity),
        "last_message": message_payload(last) if last else None,
    }
    if conversation.call_state:
        payload["call_state"] = conversation.call_state
    if conversation.subject:
        payload["subject"] = conversation.subject
    return payload


def identity_for_mode(identity: Identity) -> Identity:
    """The identity with its ``crm`` block in CRM mode and without it otherwise (SPEC §2),
    also for a conversation identified before ``CP_MODE`` was changed."""
    has_crm = "crm" in identity
    if (settings.CP_MODE == "crm") == has_crm:
        return identity
    adjusted = dict(identity)
    if has_crm:
        del adjusted["crm"]
    else:
        info = identity["identifier"]
        adjusted["crm"] = crm_identifier(
            channel=info["channel"], kind=Kind(info["kind"]), value=info["value"]
        )
    return adjusted  # type: ignore[return-value]


def encode(frame: object) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def snapshot_frame() -> str:
    """What a console gets on connect and after a gap: every open conversation (SPEC §4)."""
    conversations = [conversation_payload(c) for c in open_conversations()]
    return encode({"type": "snapshot", "conversations": conversations})


def conversation_changed(
    conversation: Conversation, event: LifecycleEvent, *, crm_handoff: bool = True
) -> None:
    """Tell every console that a conversation started, was identified, changed or ended.

    In CRM mode the identity is also handed to the CRM's webhook: an outbox
    row written here, in the caller's transaction, so consoles and CRM are
    told the same things (``crm_handoff=False`` for the CRM's own answer).
    """
    if crm_handoff and event != "ended":
        # Imported here: crm.outbox builds its payload with this module.
        from crm.outbox import delivery_enqueue

        delivery_enqueue(conversation=conversation)
    console = encode(
        {"type": "conversation", "event": event, "conversation": conversation_payload(conversation)}
    )
    _publish(
        {
            "type": "hub.conversation",
            "conversation_id": str(conversation.pk),
            "console": console,
            "visitor": encode({"type": "ended"}) if event == "ended" else None,
            "identity_updated_at": timestamp(conversation.identity_updated_at),
        }
    )


def message_posted(message: Message) -> None:
    """Send a message to the consoles watching its conversation, and an agent's to the visitor."""
    payload = message_payload(message)
    conversation_id = str(message.conversation_id)
    _publish(
        {
            "type": "hub.message",
            "conversation_id": conversation_id,
            "console": encode(
                {"type": "message", "conversation_id": conversation_id, "message": payload}
            ),
            "visitor": (
                encode({"type": "message", **payload})
                if message.sender == Message.Sender.AGENT
                else None
            ),
        }
    )


def _publish(event: HubEvent) -> None:
    transaction.on_commit(lambda: _send({**event, "committed_at": time.time()}))


def _send(event: HubEvent) -> None:
    from chat.hub import serving_hub

    hub = serving_hub()
    if hub is not None:
        hub.publish_threadsafe(event)
        return
    # No server loop in this process (a management command, an admin request
    # under WSGI): publish directly and wait for it.
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(HUB_GROUP, dict(event))
    except Exception:
        # The change is committed; a console that missed the push catches up
        # from its next snapshot. Never fail the write because a push failed.
        log.exception(
            "could not publish %s for conversation %s", event["type"], event["conversation_id"]
        )
