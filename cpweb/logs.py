"""``CP_LOG_FORMAT=json``: every log line one JSON object, for a log shipper.

An identification decision (``directory.decisions``) carries its fields in
``record.identification``; they become the line's own keys, so a query such
as ``identifier_hash = "…"`` finds it without parsing the message.
"""

import json
import logging
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
        }
        decision = getattr(record, "identification", None)
        if isinstance(decision, dict):
            line |= decision
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)
