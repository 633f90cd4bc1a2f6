"""``POST /webhooks/sinch/conversation/``: Sinch Conversation API callbacks (SPEC §5).

Every callback is signed (``chat.webhooks.signatures``); a forged, stale or
replayed one is refused with 401 and nothing of it is stored. Of the
triggers, cpweb acts on:

- MESSAGE_INBOUND (``message``, direction TO_APP): the customer's message, in
  the open conversation of their channel identity or a new one;
- CONTACT_CREATE / CONTACT_UPDATE (``contact_create_notification`` /
  ``contact_update_notification``): a ``display_name`` refreshes the cached
  platform name;
- CONVERSATION_STOP (``conversation_stop_notification``): the conversation ends.

Anything else (delivery reports, other triggers, unknown channels) is
answered 200 and ignored: Sinch adds triggers and channels over time.
"""

import logging
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chat import services
from chat.webhooks.common import (
    BodyTooLarge,
    counts_rejections,
    error,
    json_object,
    read_body,
    text,
    too_large,
)
from chat.webhooks.signatures import SignatureError, verify_conversation_callback

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 20_000


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def contact_message_text(contact_message: object) -> str:
    """What the agent reads for a customer's message of any kind."""
    if not isinstance(contact_message, dict) or not contact_message:
        return "[empty message]"
    kind, body = next(iter(contact_message.items()))
    body = body if isinstance(body, dict) else {}
    if kind == "text_message":
        return text(body.get("text"), MAX_TEXT_CHARS) or "[empty message]"
    if kind == "media_message":
        return f"[media] {text(body.get('url'), 2000)}".strip()
    if kind == "media_card_message":
        caption = text(body.get("caption"), MAX_TEXT_CHARS)
        return f"[media] {text(body.get('url'), 2000)}\n{caption}".strip()
    if kind == "location_message":
        place = _object(body.get("coordinates"))
        where = f"{place.get('latitude', '?')}, {place.get('longitude', '?')}"
        label = " ".join(filter(None, [text(body.get("title")), text(body.get("label"))]))
        return f"[location] {label} ({where})".replace("  ", " ").strip()
    if kind == "choice_response_message":
        return f"[choice] {text(body.get('postback_data'), 2000) or text(body.get('message_id'))}"
    if kind == "fallback_message":
        reason = _object(body.get("reason"))
        raw = text(body.get("raw_message"), MAX_TEXT_CHARS)
        return f"[unsupported message] {raw or text(reason.get('description'), 2000)}".strip()
    if kind == "product_response_message":
        titles = [
            text(product.get("title") or product.get("id"))
            for product in _list(body.get("products"))
            if isinstance(product, dict)
        ]
        return f"[products] {', '.join(titles)}".strip()
    return f"[{kind.removesuffix('_message').replace('_', ' ')}]"


def _handle_message(payload: dict[str, Any]) -> str:
    message = payload["message"]
    if not isinstance(message, dict) or message.get("direction", "TO_APP") != "TO_APP":
        return "ignored"
    identity = message.get("channel_identity")
    identity = identity if isinstance(identity, dict) else {}
    channel, customer = text(identity.get("channel"), 40), text(identity.get("identity"))
    if not channel or not customer:
        return "ignored"
    conversation = services.sinch_message_receive(
        project_id=text(payload.get("project_id"), 100),
        app_id=text(payload.get("app_id"), 100) or text(identity.get("app_id"), 100),
        message_id=text(message.get("id"), 100),
        channel=channel,
        identity=customer,
        contact_id=text(message.get("contact_id"), 100),
        sinch_conversation_id=text(message.get("conversation_id"), 100),
        text=contact_message_text(message.get("contact_message")),
    )
    return "accepted" if conversation is not None else "ignored"


def _handle_contact(notification: object) -> str:
    contact = notification.get("contact") if isinstance(notification, dict) else None
    if not isinstance(contact, dict) or not isinstance(contact.get("display_name"), str):
        return "ignored"
    contact_id = text(contact.get("id"), 100)
    if not contact_id:
        return "ignored"
    services.sinch_contact_name_store(
        contact_id=contact_id, channel="", name=contact["display_name"]
    )
    return "accepted"


def _handle_stop(notification: object) -> str:
    conversation = notification.get("conversation") if isinstance(notification, dict) else None
    conversation_id = text(conversation.get("id"), 100) if isinstance(conversation, dict) else ""
    if not conversation_id:
        return "ignored"
    services.sinch_conversation_stopped(sinch_conversation_id=conversation_id)
    return "accepted"


def handle_callback(payload: dict[str, Any]) -> str:
    """Act on a verified callback; "accepted" or "ignored"."""
    if "message" in payload:
        return _handle_message(payload)
    for trigger in ("contact_create_notification", "contact_update_notification"):
        if trigger in payload:
            return _handle_contact(payload[trigger])
    if "conversation_stop_notification" in payload:
        return _handle_stop(payload["conversation_stop_notification"])
    return "ignored"


@csrf_exempt
@counts_rejections("sinch_conversation")
@require_POST
def sinch_conversation_webhook(request: HttpRequest) -> JsonResponse:
    secret = settings.SINCH_CONVERSATION_WEBHOOK_SECRET
    if not secret:
        return error(503, "not_configured", "Set SINCH_CONVERSATION_WEBHOOK_SECRET to accept "
                     "Conversation API callbacks.")  # fmt: skip
    try:
        body = read_body(request, settings.CP_WEBHOOK_MAX_BYTES)
    except BodyTooLarge:
        return too_large(settings.CP_WEBHOOK_MAX_BYTES)
    try:
        nonce = verify_conversation_callback(
            secret=secret,
            body=body,
            headers=request.headers,
            now=time.time(),
            max_age=settings.SINCH_WEBHOOK_MAX_AGE,
        )
    except SignatureError as exc:
        log.warning("Sinch conversation callback refused: %s", exc.message)
        return error(401, exc.code, exc.message)
    try:
        payload = json_object(body)
    except ValueError as exc:
        return error(400, "invalid_json", str(exc))
    with transaction.atomic():
        if not services.webhook_nonce_record(nonce=nonce, max_age=settings.SINCH_WEBHOOK_MAX_AGE):
            log.warning("Sinch conversation callback refused: nonce %r replayed", nonce)
            return error(401, "replayed_nonce", "This nonce was used before.")
        outcome = handle_callback(payload)
    return JsonResponse({"status": outcome})
