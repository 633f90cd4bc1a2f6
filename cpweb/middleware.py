"""Request-wide behaviour that belongs to no app."""

import logging
from collections.abc import Callable
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class DatabaseUnavailableMiddleware:
    """A request that finds the database down (restarting, failing over) gets a
    503 with ``Retry-After``, a retryable answer, instead of a 500 that reads as
    a bug. Integrations (Sinch, the mail system, the CRM) retry on 503."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        response = JsonResponse(
            {"error": "unavailable", "message": "The service is briefly unavailable; try again."},
            status=503,
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


# Like 4401/4403/4429 for 401/403/429: a close code that reads as HTTP 503,
# "try again later" (daphne lets applications use only 1000 and 3000-4999).
CLOSE_TRY_AGAIN = 4503


class WebsocketDatabaseGuard:
    """ASGI middleware for websockets: if the database is down before the socket
    was answered (the session lookup of ``AuthMiddlewareStack`` needs it), accept
    and close with 4503 so the client reconnects later, instead of failing the
    handshake with a 500. Once a consumer runs, it handles database errors itself."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        answered = False

        async def watched_send(message: dict[str, Any]) -> None:
            nonlocal answered
            answered = True
            await send(message)

        try:
            await self.application(scope, receive, watched_send)
        except (OperationalError, InterfaceError):
            if scope["type"] != "websocket" or answered:
                raise
            log.warning("websocket refused with 4503: the database is unavailable")
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN})
