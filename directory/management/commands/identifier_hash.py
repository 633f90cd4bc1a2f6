"""Print the hash that stands for an identifier in the identification log.

    manage.py identifier_hash --channel voice "070-123 45 67"

Normalises the identifier as an incoming conversation on that channel would
be, then prints its keyed hash (directory.decisions): search the log for it
to find every decision about that customer.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from directory.decisions import identifier_hash
from directory.identify import canonical_channel, channel_kind, normalize_identifier
from directory.normalize import IdentifierError


class Command(BaseCommand):
    help = "Print the log hash of an identifier, to find its identification decisions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("identifier", help="as the customer used it, in any format")
        parser.add_argument(
            "--channel", required=True, help="webchat, voice, email, WHATSAPP, MESSENGER, …"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            channel = canonical_channel(options["channel"])
            value = normalize_identifier(channel, options["identifier"])
        except IdentifierError as exc:
            raise CommandError(exc.message) from exc
        kind = channel_kind(channel).value
        digest = identifier_hash(kind=kind, value=value, channel=channel)
        self.stdout.write(f"{digest}\t{channel} {kind} {value}")
