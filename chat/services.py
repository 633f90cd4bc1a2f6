"""Writes to conversations: start, post a message, end, re-identify; and what
the channel webhooks (SPEC §5) turn into conversations: Sinch Conversation API
messages, Sinch Voice calls, inbound emails.

Each function writes in one transaction and announces the change through
``chat.events``, which pushes it once the transaction commits. Calls to Sinch
(platform names, agent replies) run after the commit in ``chat.background``.
"""

import logging
import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from chat import background, events, sinch_api
from chat.models import (
    CallState,
    Conversation,
    InboundEmail,
    Message,
    RejectedEmail,
    SinchContactName,
    SinchLink,
    SinchOutboundMessage,
    VoiceCall,
    WebhookNonce,
    storable_text,
)
from chat.selectors import open_conversations_with_identifiers, token_hash, with_last_messages
from crm.identity import identity_keep_answer
from directory.decisions import decision_on_commit, identify_timed
from directory.identify import (
    CHANNELS,
    PLATFORM_CHANNELS,
    canonical_channel,
    normalize_identifier,
)
from directory.normalize import IdentifierError

# Past this many changed identifiers, re-identifying every open conversation
# is cheaper than matching them one by one.
REIDENTIFY_ALL_THRESHOLD = 1000

log = logging.getLogger(__name__)


def conversation_start(
    *,
    channel: str,
    identifier: str,
    name: str | None = None,
    verified: bool = False,
    subject: str = "",
    call_state: str = "",
) -> tuple[Conversation, str]:
    """Open a conversation, identify its customer, tell the consoles.

    Returns the conversation and the visitor's resume token (stored only as
    a hash). Raises IdentifierError for an invalid identifier.
    """
    identity = identify_timed(channel=channel, identifier=identifier, name=name, verified=verified)
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
            subject=subject,
            call_state=call_state,
        )
        events.conversation_changed(conversation, "started")
        events.conversation_changed(conversation, "identified")
        decision_on_commit(identity, trigger="start", conversation_id=str(conversation.pk))
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
            if sender == Message.Sender.AGENT and conversation.channel in SINCH_CHANNELS:
                # The customer is on WhatsApp, Messenger…: the reply goes out
                # through the Conversation API once it is stored.
                SinchOutboundMessage.objects.create(message=message)
                job = partial(sinch_reply_deliver, message_id=message.pk)
                transaction.on_commit(partial(background.submit, job))
            events.message_posted(message)
    except IntegrityError:
        # A resend after a lost ack (or a race from a second socket): the
        # message is stored already; answer with it. Push it again: the ack
        # may have been lost with a process that died before pushing it, and
        # consoles and visitors drop a message they already have.
        stored = Message.objects.get(
            conversation=conversation, sender=sender, client_msg_id=client_msg_id
        )
        events.message_posted(stored)
        return stored
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


def conversations_reidentify(
    *, identifiers: Iterable[str] | None, trigger: str = "reidentify"
) -> int:
    """Identify open conversations again after a directory change; push those that changed.

    ``identifiers`` are the normalised values the change touched (None: any).
    ``trigger`` names the cause in the decision log. Returns how many
    conversations changed identity.
    """
    values = None if identifiers is None else set(identifiers)
    if values is not None and len(values) > REIDENTIFY_ALL_THRESHOLD:
        values = None
    if values is not None and not values:
        return 0
    changed = 0
    for conversation in open_conversations_with_identifiers(values).iterator(chunk_size=500):
        try:
            identity = identify_timed(
                channel=conversation.channel,
                identifier=conversation.identifier_raw,
                name=conversation.name or None,
                verified=conversation.verified,
            )
        except IdentifierError:
            continue  # rules changed under a stored conversation: keep what it had
        identity = identity_keep_answer(identity, conversation.identity)
        if identity == conversation.identity:
            continue
        with_last_messages([conversation])
        with transaction.atomic():
            conversation.identity = identity
            conversation.identity_updated_at = timezone.now()
            conversation.save(update_fields=["identity", "identity_updated_at"])
            events.conversation_changed(conversation, "updated")
            decision_on_commit(identity, trigger=trigger, conversation_id=str(conversation.pk))
        changed += 1
    return changed


# --- Signed webhooks -----------------------------------------------------------


def webhook_nonce_record(*, nonce: str, max_age: int, now: datetime | None = None) -> bool:
    """Remember a signed callback's nonce; False if it was seen before (a replay).

    Call it in the transaction that stores what the callback brought, so a
    callback whose processing fails leaves no nonce behind and can be retried.
    """
    now = now or timezone.now()
    try:
        with transaction.atomic():
            WebhookNonce.objects.create(nonce=nonce, received_at=now)
    except IntegrityError:
        return False
    # Timestamps outside the window are refused before the nonce is looked at,
    # so older nonces can go (doubled, for clock skew in either direction).
    WebhookNonce.objects.filter(received_at__lt=now - timedelta(seconds=2 * max_age)).delete()
    return True


# --- Sinch Conversation API -----------------------------------------------------

SINCH_CHANNELS = CHANNELS - {"webchat", "voice", "email"}


def _platform_name_key(channel: str) -> str | None:
    """Which cached name a channel's customer goes by: a channel profile's
    (the channel), the contact's display name (""), or none (SMS, Sinch Chat)."""
    if channel not in PLATFORM_CHANNELS:
        return None
    return channel if channel in sinch_api.PROFILE_CHANNELS else ""


def _is_name(name: str | None) -> bool:
    # Sinch may hold the phone number (or nothing) as a contact's name.
    return bool(name) and any(c.isalpha() for c in name or "")


def sinch_platform_name(*, contact_id: str, channel: str) -> str | None:
    """The cached platform name of a Sinch contact on ``channel``, if any."""
    key = _platform_name_key(channel)
    if key is None or not contact_id:
        return None
    names = dict(
        SinchContactName.objects.filter(contact_id=contact_id, channel__in={key, ""}).values_list(
            "channel", "name"
        )
    )
    for candidate in (names.get(key), names.get("")):
        if _is_name(candidate):
            return candidate
    return None


def _platform_name_needs_fetch(contact_id: str, channel: str) -> bool:
    key = _platform_name_key(channel)
    if key is None or not contact_id:
        return False
    fresh_after = timezone.now() - timedelta(seconds=settings.SINCH_NAME_CACHE_SECONDS)
    return not SinchContactName.objects.filter(
        contact_id=contact_id, channel=key, fetched_at__gte=fresh_after
    ).exists()


def sinch_message_receive(
    *,
    project_id: str,
    app_id: str,
    message_id: str,
    channel: str,
    identity: str,
    contact_id: str,
    sinch_conversation_id: str,
    text: str,
) -> Conversation | None:
    """A customer's message from the Conversation API (MESSAGE_INBOUND).

    It continues the open conversation of the same channel identity, or
    starts one, identified at once with whatever platform name is cached.
    A name not cached yet is fetched after the commit and pushed as
    ``updated`` when it arrives. Returns None for a channel or identity cpweb
    does not identify (ignored, not an error). A message Sinch delivers again
    is stored once.
    """
    try:
        channel = canonical_channel(channel)
        if channel not in SINCH_CHANNELS:
            raise IdentifierError("unknown_channel", f"{channel} is not a Conversation API channel")
        value = normalize_identifier(channel, identity)
    except IdentifierError as exc:
        # The code, not the message: it quotes the identity, and logs carry no identifiers.
        log.info("Sinch message on %r ignored: unreadable identity (%s)", channel, exc.code)
        return None
    open_key = f"{channel}:{value}"
    name = sinch_platform_name(contact_id=contact_id, channel=channel)
    details = {
        "project_id": project_id,
        "app_id": app_id,
        "contact_id": contact_id,
        "sinch_conversation_id": sinch_conversation_id,
        "channel": channel,
        "identity": identity,
    }
    link: SinchLink | None = None
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                link = (
                    SinchLink.objects.select_related("conversation")
                    .filter(open_key=open_key)
                    .first()
                )
                if link is not None and link.conversation.state != Conversation.State.OPEN:
                    link.open_key = None
                    link.save(update_fields=["open_key"])
                    link = None
                if link is None:
                    conversation, _ = conversation_start(
                        channel=channel, identifier=identity, name=name
                    )
                    link = SinchLink.objects.create(
                        conversation=conversation, open_key=open_key, **details
                    )
                else:
                    changed = [f for f, v in details.items() if v and getattr(link, f) != v]
                    for field in changed:
                        setattr(link, field, details[field])
                    if changed:
                        link.save(update_fields=changed)
                message_post(
                    conversation=link.conversation,
                    sender=Message.Sender.VISITOR,
                    text=text,
                    client_msg_id=message_id[:100],
                )
            break
        except IntegrityError:
            # Another message of the same customer opened the conversation
            # at the same moment: continue that one.
            if attempt == 2:
                raise
    if _platform_name_needs_fetch(contact_id, channel):
        job = partial(
            sinch_platform_name_fetch,
            project_id=project_id,
            app_id=app_id,
            contact_id=contact_id,
            channel=channel,
        )
        key = ("sinch-name", contact_id, _platform_name_key(channel))
        transaction.on_commit(partial(background.submit, job, key=key))
    assert link is not None  # the loop stored the message or raised
    return link.conversation


def sinch_platform_name_fetch(
    *, project_id: str, app_id: str, contact_id: str, channel: str
) -> None:
    """Ask Sinch for a customer's platform name, cache it, rename their open
    conversations (a background job: it may be slow or fail, nobody waits)."""
    key = _platform_name_key(channel)
    if key is None:
        return
    try:
        if key:
            name = sinch_api.channel_profile_name(
                project_id=project_id, app_id=app_id, contact_id=contact_id, channel=channel
            )
        else:
            name = sinch_api.contact_display_name(project_id=project_id, contact_id=contact_id)
    except sinch_api.SinchApiNotConfigured as exc:
        log.info("platform name of Sinch contact %s not fetched: %s", contact_id, exc)
        return
    except sinch_api.SinchApiError as exc:
        if exc.status != 404:
            log.warning("platform name of Sinch contact %s not fetched: %s", contact_id, exc)
            return
        name = ""  # Sinch has no such contact or profile: remember there is no name
    sinch_contact_name_store(contact_id=contact_id, channel=key, name=name)


def sinch_contact_name_store(*, contact_id: str, channel: str, name: str) -> int:
    """Cache a platform name (``channel`` "" for the contact's display name) and
    re-identify the contact's open conversations under it. Returns how many
    conversations changed name."""
    name = " ".join(storable_text(name).split())[:200]
    SinchContactName.objects.update_or_create(
        contact_id=contact_id,
        channel=channel,
        defaults={"name": name, "fetched_at": timezone.now()},
    )
    renamed = 0
    links = SinchLink.objects.filter(
        contact_id=contact_id, conversation__state=Conversation.State.OPEN
    ).select_related("conversation")
    for link in links:
        wanted = sinch_platform_name(contact_id=contact_id, channel=link.channel) or ""
        if wanted != link.conversation.name:
            conversation_name_set(conversation=link.conversation, name=wanted)
            renamed += 1
    return renamed


def conversation_name_set(*, conversation: Conversation, name: str) -> None:
    """Identify a conversation again under a new name (a platform name that
    arrived late); consoles get ``updated`` if what they show changes."""
    with transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(name=name)
        conversation.name = name
        # The one place that re-identifies open conversations, so that what
        # it keeps (a CRM's answer, in CRM mode) is kept here too.
        conversations_reidentify(
            identifiers={conversation.identifier_value}, trigger="platform_name"
        )


def sinch_conversation_stopped(*, sinch_conversation_id: str) -> int:
    """Sinch ended a conversation (CONVERSATION_STOP): end ours; the customer's
    next message starts a new one."""
    ended = 0
    links = SinchLink.objects.filter(
        sinch_conversation_id=sinch_conversation_id, open_key__isnull=False
    ).select_related("conversation")
    for link in links:
        with transaction.atomic():
            link.open_key = None
            link.save(update_fields=["open_key"])
            conversation_end(conversation=link.conversation)
        ended += 1
    return ended


# Pauses between attempts to send an agent's reply (tests shorten them).
REPLY_RETRY_DELAYS: tuple[float, ...] = (1.0, 4.0)


def sinch_reply_deliver(*, message_id: int) -> None:
    """Send an agent's reply through the Conversation API (a background job).

    Tried up to three times; the outcome (Sinch's message id, or the error)
    is recorded on the reply's SinchOutboundMessage for admins.
    """
    outbound = (
        SinchOutboundMessage.objects.select_related("message__conversation")
        .filter(pk=message_id)
        .first()
    )
    if outbound is None or outbound.state == SinchOutboundMessage.State.SENT:
        return
    link = SinchLink.objects.filter(conversation_id=outbound.message.conversation_id).first()
    error = "no Sinch conversation to reply to"
    attempts = outbound.attempts
    if link is not None:
        for pause in (*REPLY_RETRY_DELAYS, None):
            attempts += 1
            try:
                sinch_message_id = sinch_api.message_send(
                    project_id=link.project_id,
                    app_id=link.app_id,
                    contact_id=link.contact_id,
                    channel=link.channel,
                    identity=link.identity,
                    text=outbound.message.text,
                )
            except sinch_api.SinchApiNotConfigured as exc:
                error = str(exc)
                break
            except sinch_api.SinchApiError as exc:
                error = str(exc)
                if pause is not None:
                    time.sleep(pause)
                continue
            SinchOutboundMessage.objects.filter(pk=message_id).update(
                state=SinchOutboundMessage.State.SENT,
                sinch_message_id=sinch_message_id,
                attempts=attempts,
                error="",
                updated_at=timezone.now(),
            )
            return
    log.warning("reply %s not sent to Sinch: %s", message_id, error)
    SinchOutboundMessage.objects.filter(pk=message_id).update(
        state=SinchOutboundMessage.State.FAILED,
        attempts=attempts,
        error=error,
        updated_at=timezone.now(),
    )


# --- Sinch Voice ----------------------------------------------------------------


def voice_call_incoming(*, call_id: str, cli: str, to_endpoint: str) -> Conversation:
    """An incoming call (ICE): a ringing voice conversation, identified from the
    caller id and pushed at once. Sinch asking again for the same call gets
    the same conversation."""
    existing = VoiceCall.objects.select_related("conversation").filter(call_id=call_id).first()
    if existing is not None:
        return existing.conversation
    try:
        with transaction.atomic():
            try:
                conversation, _ = conversation_start(
                    channel="voice", identifier=cli, call_state=CallState.RINGING
                )
            except IdentifierError as exc:
                # Not a number (a SIP user, garbage): the agent still sees the
                # call, without a lookup; the raw caller id stays on the VoiceCall.
                log.warning("call %s: caller id unreadable (%s)", call_id, exc.code)
                conversation, _ = conversation_start(
                    channel="voice", identifier="", call_state=CallState.RINGING
                )
            VoiceCall.objects.create(
                call_id=call_id, conversation=conversation, cli=cli[:100], to_endpoint=to_endpoint
            )
    except IntegrityError:
        return VoiceCall.objects.select_related("conversation").get(call_id=call_id).conversation
    return conversation


def voice_call_answered(*, call_id: str) -> Conversation | None:
    """The call was answered (ACE): consoles see it move from ringing to answered."""
    with transaction.atomic():
        call = (
            VoiceCall.objects.select_for_update()
            .select_related("conversation")
            .filter(call_id=call_id)
            .first()
        )
        if call is None or call.state != CallState.RINGING:
            return None
        call.state = CallState.ANSWERED
        call.save(update_fields=["state", "updated_at"])
        conversation = call.conversation
        if conversation.state != Conversation.State.OPEN:
            return conversation
        conversation.call_state = CallState.ANSWERED
        conversation.save(update_fields=["call_state"])
        with_last_messages([conversation])
        # The identity did not change: nothing new for the CRM.
        events.conversation_changed(conversation, "updated", crm_handoff=False)
    return conversation


def voice_call_ended(*, call_id: str) -> Conversation | None:
    """The call was disconnected (DICE): the conversation ends."""
    with transaction.atomic():
        call = (
            VoiceCall.objects.select_for_update()
            .select_related("conversation")
            .filter(call_id=call_id)
            .first()
        )
        if call is None:
            return None
        if call.state != CallState.ENDED:
            call.state = CallState.ENDED
            call.save(update_fields=["state", "updated_at"])
        Conversation.objects.filter(pk=call.conversation_id).update(call_state=CallState.ENDED)
        return conversation_end(conversation=call.conversation)


# --- Inbound email --------------------------------------------------------------


def email_receive(
    *,
    from_address: str,
    from_name: str,
    from_header: str,
    subject: str,
    header_message_id: str,
    references: list[str],
    text: str,
) -> tuple[Conversation, Message | None, bool]:
    """An inbound email: a reply (In-Reply-To / References naming an email of an
    open conversation) continues that conversation, anything else starts one
    identified by the From address, its display name an unverified claim.

    Returns (conversation, message, duplicate): an email delivered again
    (same Message-ID) is stored once. Raises IdentifierError for a From
    address that is not an email address.
    """
    if header_message_id:
        seen = (
            InboundEmail.objects.select_related("conversation", "message")
            .filter(header_message_id=header_message_id)
            .first()
        )
        if seen is not None:
            return seen.conversation, seen.message, True
    try:
        with transaction.atomic():
            open_thread = InboundEmail.objects.filter(
                header_message_id__in=references, conversation__state=Conversation.State.OPEN
            )
            thread = (
                open_thread.select_related("conversation").order_by("-id").first()
                if references
                else None
            )
            if thread is not None:
                conversation = thread.conversation
            else:
                conversation, _ = conversation_start(
                    channel="email",
                    identifier=from_address,
                    name=from_name or None,
                    subject=subject[:300],
                )
            message = message_post(
                conversation=conversation, sender=Message.Sender.VISITOR, text=text
            )
            InboundEmail.objects.create(
                conversation=conversation,
                message=message,
                header_message_id=header_message_id or None,
                subject=subject[:300],
                from_header=from_header[:400],
            )
    except IntegrityError:
        if not header_message_id:
            raise
        seen = InboundEmail.objects.select_related("conversation", "message").get(
            header_message_id=header_message_id
        )
        return seen.conversation, seen.message, True
    return conversation, message, False


def email_reject(*, raw: bytes, code: str, reason: str) -> RejectedEmail:
    """Keep an email that could not be read, whole, for an admin to look at."""
    return RejectedEmail.objects.create(
        reason_code=code, reason=storable_text(reason), raw=raw, size=len(raw)
    )
