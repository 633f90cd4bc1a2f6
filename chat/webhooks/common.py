"""What every webhook view shares: bounded body reads, JSON bodies, error answers."""

import hmac
import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from chat.models import storable_text
from cpweb.metrics import WEBHOOK_REJECTIONS


class BodyTooLarge(Exception):
    pass


def error(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    response = JsonResponse({"error": code, "message": message, **extra}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="cpweb"'
    response.error_code = code  # type: ignore[attr-defined]  # for counts_rejections
    return response


View = Callable[[HttpRequest], HttpResponse]


def counts_rejections(webhook: str) -> Callable[[View], View]:
    """Count the view's refusals in ``cpweb_webhook_rejections_total{webhook, reason}``:
    the answer's error code, or ``http_<status>`` for Django's own (a wrong method)."""

    def decorate(view: View) -> View:
        @wraps(view)
        def counted(request: HttpRequest) -> HttpResponse:
            response = view(request)
            if response.status_code >= 400:
                reason = getattr(response, "error_code", None) or f"http_{response.status_code}"
                WEBHOOK_REJECTIONS.labels(webhook, reason).inc()
            return response

        return counted

    return decorate


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
