"""``python manage.py import_directory FILE.csv``: load a large directory (SPEC §6)."""

import io
import os
from typing import Any, TextIO, cast

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from directory.services import ImportReport, directory_import


class Command(BaseCommand):
    help = (
        "Import contacts from a CSV file (external_id,name,company,country,emails,phones,"
        "chat_ids). Every row is validated; if any is bad, nothing is imported."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="UTF-8 CSV file with a header row")
        parser.add_argument(
            "--update",
            action="store_true",
            help="replace contacts whose external_id is already in the directory",
        )
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument(
            "--workers",
            type=int,
            default=min(4, os.cpu_count() or 1),
            help="processes validating rows while this one writes (0: validate in-process)",
        )
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["file"]
        try:
            raw = open(path, "rb")  # noqa: SIM115 - closed by the with block below
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
        with raw:
            size = raw.seek(0, io.SEEK_END)
            raw.seek(0)
            if size > settings.CP_IMPORT_FILE_MAX_BYTES:
                raise CommandError(
                    f"{path} is {size:,} bytes, over the limit of "
                    f"{settings.CP_IMPORT_FILE_MAX_BYTES:,} (CP_IMPORT_FILE_MAX_BYTES); "
                    "nothing imported"
                )
            with tqdm(
                total=size,
                unit="B",
                unit_scale=True,
                desc="importing",
                disable=options["no_progress"],
                file=cast(TextIO, self.stderr._out),
            ) as progress:

                def on_batch(report: ImportReport) -> None:
                    # Bytes consumed so far: the text layer reads ahead by at
                    # most one chunk, which is fine for a progress bar.
                    progress.update(raw.tell() - progress.n)
                    progress.set_postfix(rows=report.rows, errors=report.error_count)

                stream = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
                report = directory_import(
                    stream,
                    update=options["update"],
                    batch_size=options["batch_size"],
                    workers=options["workers"],
                    on_batch=on_batch,
                )
                stream.detach()
        if not report.ok:
            for row_number, reason in report.errors:
                self.stderr.write(f"row {row_number}: {reason}")
            if report.error_count > len(report.errors):
                self.stderr.write(f"… {report.error_count - len(report.errors)} more problems")
            raise CommandError(
                f"nothing imported: {report.error_count} of {report.rows} rows have problems"
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {report.rows} rows: {report.created} contacts created, "
                f"{report.updated} updated"
            )
        )
