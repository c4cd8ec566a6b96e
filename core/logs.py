"""Structured logs: one JSON object per line, with whatever ids the caller attached."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from core.config import Settings
from core.secrets import is_placeholder, secret_values

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


MASK = "**********"


class Redacting(logging.Formatter):
    """A formatter that replaces known secret values (from the settings) wherever they appear."""

    def __init__(self, secrets: Iterable[str] = (), fmt: str | None = None) -> None:
        super().__init__(fmt)
        # Short values would mask ordinary words; real secrets are long. Longest first.
        values = {v for v in secrets if len(v) >= 8 and v != "not-needed" and not is_placeholder(v)}
        values |= {json.dumps(v)[1:-1] for v in values}  # as they look inside a JSON string
        self.secrets = sorted(values, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """text with every known secret masked."""
        for value in self.secrets:
            text = text.replace(value, MASK)
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(Redacting):
    """Formats a record and its `extra` fields as one JSON line; SecretStr values print masked."""

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
        return self.redact(json.dumps(data, default=str))


def setup_logging(settings: Settings, level: int = logging.INFO) -> None:
    """Route docsort's loggers to stderr, as JSON lines when settings.log_json."""
    handler = logging.StreamHandler()
    secrets = secret_values(settings).values()
    handler.setFormatter(JsonFormatter(secrets) if settings.log_json else Redacting(secrets))
    root = logging.getLogger("docsort")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
