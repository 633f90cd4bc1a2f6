"""``GET /healthz`` (SPEC §5): is the process alive, and can it reach what it needs?"""

import asyncio
import time

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse

TIMEOUT_SECONDS = 2.0


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _channel_layer() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel("healthz.")
    await layer.send(channel, {"type": "healthz"})
    await layer.receive(channel)


async def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the channel layer answer within 2 s each, else 503."""
    checks = {}
    for name, check in (
        ("database", lambda: sync_to_async(_database)()),
        ("channel_layer", _channel_layer),
    ):
        started = time.perf_counter()
        try:
            await asyncio.wait_for(check(), TIMEOUT_SECONDS)
        except Exception as exc:  # any failure is "not ready", reported by name
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
        else:
            checks[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                        status=200 if ready else 503)  # fmt: skip
