"""``POST /webhooks/sinch/voice/``: Sinch Voice callbacks (SPEC §5).

Every request is signed (``Authorization: Application <key>:<signature>``,
``chat.webhooks.signatures``); a wrong or missing signature gets 401.

- ``ice`` (Incoming Call Event): the caller is identified from ``cli`` and a
  ringing voice conversation is pushed to the consoles at once. The answer is
  SVAML: ``connectPstn`` to SINCH_VOICE_CONNECT_NUMBER when it is set (the
  contact center's line, keeping the caller's number as CLI), else ``park``:
  the caller hears SINCH_VOICE_HOLD_PROMPT until the contact center's own
  routing picks the call up. cpweb identifies calls; it does not route them.
- ``ace`` (answered): the conversation's ``call_state`` becomes ``answered``
  (pushed as ``updated``); the answer is ``continue``.
- ``dice`` (disconnected): the conversation ends (``call_state`` ``ended``).
- anything else (``pie``, ``notify``, future events): 200 and ignored.
"""

import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chat import services
from chat.models import storable_text
from chat.webhooks.common import (
    BodyTooLarge,
    counts_rejections,
    error,
    json_object,
    read_body,
    text,
    too_large,
)
from chat.webhooks.signatures import SignatureError, verify_voice_callback

log = logging.getLogger(__name__)

PARK_MAX_SECONDS = 600


def ice_svaml(cli: str) -> dict[str, Any]:
    """The SVAML answer to an incoming call."""
    number = settings.SINCH_VOICE_CONNECT_NUMBER
    if number:
        action: dict[str, Any] = {"name": "connectPstn", "number": number}
        if cli:
            action["cli"] = cli if cli.startswith("+") or not cli.isdigit() else f"+{cli}"
        return {"instructions": [], "action": action}
    prompt = settings.SINCH_VOICE_HOLD_PROMPT
    return {
        "instructions": [],
        "action": {
            "name": "park",
            "introPrompt": prompt,
            "holdPrompt": prompt,
            "maxDuration": PARK_MAX_SECONDS,
        },
    }


ACE_SVAML = {"instructions": [], "action": {"name": "continue"}}


def _cli(payload: dict[str, Any]) -> str:
    cli = payload.get("cli")
    return storable_text(cli).strip()[:100] if isinstance(cli, str) else ""


def _to_endpoint(payload: dict[str, Any]) -> str:
    to = payload.get("to")
    return text(to.get("endpoint"), 200) if isinstance(to, dict) else ""


@csrf_exempt
@counts_rejections("sinch_voice")
@require_POST
def sinch_voice_webhook(request: HttpRequest) -> HttpResponse:
    if not (settings.SINCH_VOICE_APP_KEY and settings.SINCH_VOICE_APP_SECRET):
        return error(503, "not_configured", "Set SINCH_VOICE_APP_KEY and SINCH_VOICE_APP_SECRET "
                     "to accept Voice callbacks.")  # fmt: skip
    try:
        body = read_body(request, settings.CP_WEBHOOK_MAX_BYTES)
    except BodyTooLarge:
        return too_large(settings.CP_WEBHOOK_MAX_BYTES)
    try:
        verify_voice_callback(
            app_key=settings.SINCH_VOICE_APP_KEY,
            app_secret=settings.SINCH_VOICE_APP_SECRET,
            method=request.method or "POST",
            body=body,
            headers=request.headers,
            path=request.path,
            now=timezone.now(),
            max_age=settings.SINCH_WEBHOOK_MAX_AGE,
        )
    except SignatureError as exc:
        log.warning("Sinch voice callback refused: %s", exc.message)
        return error(401, exc.code, exc.message)
    try:
        payload = json_object(body)
    except ValueError as exc:
        return error(400, "invalid_json", str(exc))
    event, call_id = text(payload.get("event"), 20), text(payload.get("callid"), 100)
    if event in {"ice", "ace", "dice"} and not call_id:
        return error(400, "invalid_request", f"An {event} event needs a 'callid'.")
    if event == "ice":
        cli = _cli(payload)
        services.voice_call_incoming(call_id=call_id, cli=cli, to_endpoint=_to_endpoint(payload))
        return JsonResponse(ice_svaml(cli))
    if event == "ace":
        services.voice_call_answered(call_id=call_id)
        return JsonResponse(ACE_SVAML)
    if event == "dice":
        services.voice_call_ended(call_id=call_id)
    return HttpResponse(status=200)
