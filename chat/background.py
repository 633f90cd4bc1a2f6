"""Work that must never hold up a webhook's answer or a console's ack.

Fetching a customer's platform name and sending an agent's reply through the
Conversation API are HTTP calls to Sinch that may be slow or fail. They run
here, on a small pool of threads per process, after the transaction that
asked for them commits.

Why threads and not an asyncio task on daphne's loop: the jobs are ordinary
blocking code (httpx, the ORM) that also has to run where there is no
server loop (Django's test client, management commands). On daphne's loop
their ORM work would queue behind every websocket frame in the single
database thread that ``database_sync_to_async`` uses; a thread of their own
keeps a slow Sinch from delaying anything else, and the pool's size
(CP_BACKGROUND_WORKERS) caps how many run at once. Each job's HTTP calls carry
a short timeout (SINCH_API_TIMEOUT). Jobs live in memory: a job cut off by a
restart is not re-run (a platform name is fetched again with the customer's
next message; an unsent reply stays ``pending`` in admin).
"""

import logging
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections

log = logging.getLogger(__name__)

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_running: set[Future[None]] = set()
_keys: set[Hashable] = set()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=settings.CP_BACKGROUND_WORKERS, thread_name_prefix="cpweb-background"
            )
        return _executor


def submit(job: Callable[..., Any], *args: Any, key: Hashable | None = None) -> bool:
    """Run ``job(*args)`` on the pool. With ``key``, skip it while one with that key runs."""
    with _lock:
        if key is not None:
            if key in _keys:
                return False
            _keys.add(key)

    def run() -> None:
        close_old_connections()
        try:
            job(*args)
        except Exception:
            log.exception("background job %s failed", getattr(job, "__name__", job))
        finally:
            # The pool's threads are not request threads: nobody else closes
            # their connections.
            connections.close_all()
            if key is not None:
                with _lock:
                    _keys.discard(key)

    future = _pool().submit(run)
    with _lock:
        _running.add(future)
    future.add_done_callback(_forget)
    return True


def _forget(future: "Future[None]") -> None:
    with _lock:
        _running.discard(future)


def wait_idle(timeout: float = 10) -> bool:
    """Wait until no job is queued or running (tests). True if it got there in time."""
    with _lock:
        pending = list(_running)
    _done, not_done = wait(pending, timeout=timeout)
    return not not_done
