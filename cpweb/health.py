"""``GET /healthz`` (SPEC §5): can this process serve? Database and channel layer.

200 ``{"status": "ok", "checks": {...}}`` when both answer within
``CP_HEALTH_TIMEOUT`` seconds, else 503 naming the check that failed. Both
checks run at once, so an answer never takes much longer than the timeout.
The answer says only which check failed and how (the exception's type or a
timeout); the details go to the log, not to whoever can reach the URL.
"""

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from chat.hub import get_hub

log = logging.getLogger(__name__)

# One thread of its own for the database probe, and at most one probe in
# flight: a database that hangs ties up this thread, not the pool every
# sync_to_async call shares, and probes arriving meanwhile wait on that one.
_database_thread = concurrent.futures.ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="healthz-db"
)
_database_probe: concurrent.futures.Future[None] | None = None


def _select_one() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # the probe's thread keeps no connection open


async def _database() -> None:
    global _database_probe
    if _database_probe is None or _database_probe.done():
        _database_probe = _database_thread.submit(_select_one)
    # shield: a probe that gives up leaves the shared one running for the next.
    await asyncio.shield(asyncio.wrap_future(_database_probe))


async def _channel_layer() -> None:
    hub = await get_hub()
    await hub.ping()


async def _timed(name: str, check: Callable[[], Awaitable[None]]) -> dict[str, object]:
    timeout = settings.CP_HEALTH_TIMEOUT
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        log.warning("healthz: %s did not answer within %s s", name, timeout)
        return {"ok": False, "error": f"no answer within {timeout:g} s"}
    except Exception as exc:  # any failure means "not ready", named in the answer
        log.warning("healthz: %s failed: %s: %s", name, type(exc).__name__, exc)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


@csrf_exempt  # no session, no state: a probe needs no token
@require_safe
async def healthz(request: HttpRequest) -> JsonResponse:
    database, channel_layer = await asyncio.gather(
        _timed("database", _database), _timed("channel_layer", _channel_layer)
    )
    checks = {"database": database, "channel_layer": channel_layer}
    failing = [name for name, check in checks.items() if not check["ok"]]
    body: dict[str, object] = {"status": "unavailable" if failing else "ok", "checks": checks}
    if failing:
        body["failing"] = failing
    response = JsonResponse(body, status=503 if failing else 200)
    response["Cache-Control"] = "no-store"
    return response
