"""cpweb.db: the consumers' database work runs on several threads at once."""

import asyncio
import threading

from django.test import override_settings

from cpweb.db import close_pool, db


async def test_calls_from_different_sockets_run_at_the_same_time():
    # Three calls that can only finish together: on one thread (Channels'
    # database_sync_to_async) the first would wait for the others forever.
    close_pool()
    with override_settings(CP_DB_THREADS=3):
        barrier = threading.Barrier(3)

        def meet() -> str:
            barrier.wait(timeout=5)
            return threading.current_thread().name

        try:
            names = await asyncio.gather(*(db(meet)() for _ in range(3)))
        finally:
            close_pool()
    assert len(set(names)) == 3
    assert all(name.startswith("cpweb-db") for name in names)
