"""Structured logs: one JSON object per line, with whatever ids the caller attached."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from docsort.config import Settings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record and its `extra` fields as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging(settings: Settings, level: int = logging.INFO) -> None:
    """Route docsort's loggers to stderr, as JSON lines when settings.log_json."""
    handler = logging.StreamHandler()
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger("docsort")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
