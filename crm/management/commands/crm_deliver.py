"""``python manage.py crm_deliver``: the CRM webhook worker as its own process."""

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm.outbox import handoff_enabled
from crm.worker import Worker, wake


class Command(BaseCommand):
    help = (
        "Deliver the CRM webhook outbox (CP_MODE=crm with CRM_WEBHOOK_URL). Runs until "
        "SIGTERM/SIGINT; --once delivers what is due now and exits (cron, tests)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="deliver everything due now, then exit"
        )

    def handle(self, *args: Any, once: bool = False, **options: Any) -> None:
        if not handoff_enabled():
            raise CommandError("crm_deliver needs CP_MODE=crm and CRM_WEBHOOK_URL")
        stop = threading.Event()

        def request_stop(signum: int, frame: object) -> None:
            # The attempt in flight finishes (or times out) and is recorded.
            stop.set()
            wake()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        worker = Worker(stop=stop)
        worker.run(once=once)
        self.stdout.write(f"crm_deliver: {worker.delivered} delivered, {worker.failed} failed")
