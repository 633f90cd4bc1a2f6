"""``POST /api/identify``: the identification engine over HTTP (SPEC §5)."""

import hmac
import json

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from directory.decisions import decision_recorded, identify_timed
from directory.identify import canonical_channel, webchat_identity_hash_valid
from directory.normalize import IdentifierError, normalize_email

MAX_BODY_BYTES = 16 * 1024


def _error(status: int, code: str, message: str) -> JsonResponse:
    response = JsonResponse({"error": code, "message": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="cpweb"'
    return response


def _authorised(request: HttpRequest) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), settings.CP_API_TOKEN.encode()
    )


@csrf_exempt
@require_POST
def identify_view(request: HttpRequest) -> JsonResponse:
    if not settings.CP_API_TOKEN:
        return _error(503, "not_configured", "Set CP_API_TOKEN to enable /api/identify.")
    if not _authorised(request):
        return _error(401, "unauthorized", "Send 'Authorization: Bearer <CP_API_TOKEN>'.")
    if len(request.body) > MAX_BODY_BYTES:
        return _error(413, "too_large", f"The request body is over {MAX_BODY_BYTES} bytes.")
    try:
        payload = json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(400, "invalid_json", f"The body is not valid JSON: {exc}")
    if not isinstance(payload, dict):
        return _error(400, "invalid_request", "The body must be a JSON object.")
    raw_channel, identifier = payload.get("channel"), payload.get("identifier")
    name, identity_hash = payload.get("name"), payload.get("identity_hash")
    if not isinstance(raw_channel, str) or not isinstance(identifier, str):
        return _error(400, "invalid_request", "'channel' and 'identifier' must be strings.")
    if not all(value is None or isinstance(value, str) for value in (name, identity_hash)):
        return _error(400, "invalid_request", "'name' and 'identity_hash' must be strings or null.")
    try:
        channel = canonical_channel(raw_channel)
        verified = False
        if identity_hash:
            if channel != "webchat":
                return _error(
                    400, "invalid_request", "identity_hash applies to the webchat channel only."
                )
            verified = webchat_identity_hash_valid(normalize_email(identifier), identity_hash)
            if not verified:
                return _error(
                    400, "invalid_identity_hash", "identity_hash does not match this email."
                )
        identity = identify_timed(
            channel=channel, identifier=identifier, name=name, verified=verified
        )
    except IdentifierError as exc:
        return _error(400, exc.code, exc.message)
    decision_recorded(identity, trigger="api")
    return JsonResponse(identity)
