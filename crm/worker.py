"""The outbox worker: delivers CRM webhooks until told to stop.

It runs in one of two places (CRM_DELIVERY_WORKER):

- ``inprocess`` (default): a thread in each daphne process, started by
  ``cpweb.asgi`` in CRM mode, so ``make run`` needs nothing else. A commit
  that wrote a row wakes it at once.
- ``external``: ``python manage.py crm_deliver``, as many as wanted on
  PostgreSQL (claims skip each other's rows), one on SQLite. It polls every
  CRM_POLL_SECONDS.

Either way the rows are in the database: stopping or killing a worker loses
nothing, and a row whose worker died mid-call is retried once its lease ends.
"""

import atexit
import logging
import threading
import time

import httpx
from django.conf import settings
from django.db import close_old_connections, connections

from crm import outbox
from crm.services import Outcome, delivery_attempt

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 3600
_wakeup = threading.Event()


def wake() -> None:
    """A row was committed: this process's worker looks at once instead of at its next poll."""
    _wakeup.set()


class Worker:
    def __init__(self, *, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.delivered = 0
        self.failed = 0
        self._pruned_at = 0.0

    def run(self, *, once: bool = False) -> None:
        """Deliver due rows; with ``once``, until none is due, else until ``stop`` is set."""
        poll = settings.CRM_POLL_SECONDS
        # A fresh connection per webhook: a CRM that restarted cannot leave a
        # dead kept-alive socket behind to fail the next delivery.
        with httpx.Client(follow_redirects=False, headers={"Connection": "close"}) as client:
            while not self.stop.is_set():
                try:
                    close_old_connections()
                    if not once:
                        self._prune()
                    attempt = delivery_attempt(client=client)
                except Exception:
                    if once:
                        raise
                    # The database is down, most likely: the rows wait there.
                    log.exception("crm: delivery loop failed; retrying in %.1fs", poll)
                    self._sleep(poll)
                    continue
                if attempt is None:
                    if once:
                        break
                    self._sleep(poll)
                elif attempt.outcome is Outcome.DELIVERED:
                    self.delivered += 1
                elif attempt.outcome is Outcome.RETRY:
                    self.failed += 1
                    # The CRM is likely down for every row: pause instead of
                    # running through all of them, one failure each.
                    if not once:
                        self._sleep(poll)
        connections.close_all()

    def _sleep(self, seconds: float) -> None:
        _wakeup.wait(seconds)
        _wakeup.clear()

    def _prune(self) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = time.monotonic()
        pruned = outbox.deliveries_prune()
        if pruned:
            log.info("crm: pruned %d delivered webhook rows", pruned)


_background: tuple[threading.Thread, Worker] | None = None


def start_in_background() -> None:
    """Run a worker in a daemon thread of this process (once)."""
    global _background
    if _background is not None:
        return
    worker = Worker()
    thread = threading.Thread(target=worker.run, name="crm-deliver", daemon=True)
    _background = (thread, worker)
    thread.start()
    atexit.register(stop_background)
    log.info("crm: webhook delivery worker started in this process")


def stop_background(timeout: float = 5) -> None:
    global _background
    if _background is None:
        return
    thread, worker = _background
    _background = None
    worker.stop.set()
    wake()
    thread.join(timeout)
