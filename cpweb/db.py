"""Database work from the websocket consumers, on a small pool of threads.

Channels' ``database_sync_to_async`` runs every call of a process on one
thread. On PostgreSQL a commit waits ~3 ms for the disk, so one thread tops a
worker out near 300 writes a second however idle its CPU is: under the
contact-center load the database thread was the bottleneck at 60 % CPU
(bench/contact_center.py). ``db`` runs the call on one of
``CP_DB_THREADS`` threads instead (default 4 on PostgreSQL; 1 on SQLite,
which takes one writer at a time anyway), each with its own connection,
closing stale ones around each call as Channels does.

Order is kept where it matters: a consumer handles its frames one at a time
and awaits each call, so one socket's writes (a visitor's messages) commit in
the order sent; different sockets' writes may overlap.
"""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import connections

_executor: ThreadPoolExecutor | None = None
_threads = 0  # the pool's size when it was made
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor, _threads
    with _lock:
        if _executor is None:
            _threads = settings.CP_DB_THREADS
            _executor = ThreadPoolExecutor(_threads, thread_name_prefix="cpweb-db")
        return _executor


def db(func: Callable[..., Any]) -> Callable[..., Any]:
    """``database_sync_to_async(func)``, on the pool."""
    return DatabaseSyncToAsync(func, thread_sensitive=False, executor=_pool())


def close_pool() -> None:
    """Close every pool thread's connections and stop the threads (tests, so the
    test database can be dropped; the next ``db`` call starts a new pool)."""
    global _executor
    with _lock:
        executor, threads, _executor = _executor, _threads, None
    if executor is None:
        return
    # One task per thread, held at a barrier until all have started: each
    # thread runs exactly one, and closes its own connections.
    barrier = threading.Barrier(threads)

    def close_own() -> None:
        try:
            barrier.wait(timeout=10)
        finally:
            connections.close_all()

    for _ in range(threads):
        executor.submit(close_own)
    executor.shutdown(wait=True)
