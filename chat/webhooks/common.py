"""What every webhook view shares: bounded body reads, JSON bodies, error answers."""

import hmac
import json
from typing import Any

from django.http import HttpRequest, JsonResponse

from chat.models import storable_text


class BodyTooLarge(Exception):
    pass


def error(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    response = JsonResponse({"error": code, "message": message, **extra}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="cpweb"'
    return response


def too_large(limit: int) -> JsonResponse:
    return error(413, "too_large", f"The request body is over {limit} bytes.")


def read_body(request: HttpRequest, limit: int) -> bytes:
    """The raw body, at most ``limit`` bytes.

    Read from the stream rather than ``request.body``: Django's own cap
    (DATA_UPLOAD_MAX_MEMORY_SIZE) would refuse emails below our limit, and a
    declared Content-Length over the limit is refused before reading anything.
    """
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise BodyTooLarge
    body = request.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge
    return body


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; ValueError with a readable reason otherwise."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError("The body must be a JSON object.")
    return payload


def bearer_token_valid(request: HttpRequest, expected: str) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return bool(expected) and (
        scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), expected.encode())
    )


def text(value: object, limit: int = 320) -> str:
    """A string field of a callback, or "" when absent or of another type."""
    return storable_text(value[:limit]) if isinstance(value, str) else ""
