"""Files of records (`.jsonl` lines, `.csv` rows, `.json` arrays) as one document per record.

Used by S3 imports and file uploads in `document_per_line` mode. A `.jsonl` line, a `.csv` row (the
first row is the header) or an element of a top-level `.json` array is one record (any other `.json`
value is one record). A record's text is its first non-empty string field named `text`, `content`,
`body` or `document` (any case); failing that, every other non-empty scalar field as `name: value`
lines; a bare JSON string is its own text. A field `external_id` or `id` becomes the document's
external id. Records are numbered from 1; blank `.jsonl` lines are not records.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ingest.extract import decode, extension, extract

Mode = Literal["document_per_file", "document_per_line"]
RECORD_TYPES = frozenset({".json", ".jsonl", ".csv"})
TEXT_FIELDS = ("text", "content", "body", "document")
ID_FIELDS = ("external_id", "id")


@dataclass(frozen=True)
class Record:
    """One record: its number, text and own id, or why it could not be read."""

    number: int
    text: str = ""
    external_id: str | None = None
    problem: str | None = None  # "unreadable: ..." when the record could not be parsed


def text_of(name: str, data: bytes) -> str:
    """A whole file's text: extracted (.txt .md .html .pdf .docx), or a record file read as it is."""
    if extension(name) in RECORD_TYPES:
        return decode(data, name=name)
    return extract(name, data)


def parse(ext: str, text: str, max_document_bytes: int) -> Iterator[Record]:
    """The records of a file's text, by its extension (one of RECORD_TYPES)."""
    for number, value in _values(ext, text, max_document_bytes):
        if isinstance(value, _Bad):
            yield Record(number, problem=f"unreadable: {value.reason}")
        else:
            yield Record(number, record_text(value), record_id(value))


@dataclass(frozen=True)
class _Bad:
    """A record that could not be parsed."""

    reason: str


def _values(ext: str, text: str, max_document_bytes: int) -> Iterator[tuple[int, Any]]:
    if ext == ".jsonl":
        number = 0
        for line in text.splitlines():
            if not line.strip():
                continue
            number += 1
            try:
                yield number, json.loads(line)
            except ValueError as exc:
                yield number, _Bad(f"invalid JSON ({exc})")
    elif ext == ".json":
        try:
            value = json.loads(text)
        except ValueError as exc:
            yield 1, _Bad(f"invalid JSON ({exc})")
            return
        yield from enumerate(value if isinstance(value, list) else [value], start=1)
    else:
        # csv's per-field limit is process-wide; raise it to what a document may hold.
        csv.field_size_limit(max(csv.field_size_limit(), max_document_bytes + 1))
        reader = csv.DictReader(io.StringIO(text, newline=""))
        number = 0
        try:
            for row in reader:
                number += 1
                yield number, row
        except csv.Error as exc:
            yield number + 1, _Bad(f"invalid CSV ({exc}); the rest of the file is not read")


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float) and str(value).strip() != ""


def record_text(value: Any) -> str:
    """A record's text by the rule in the module docstring; empty if it has none."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(v) for v in value if _scalar(v))
    if not isinstance(value, dict):
        return ""
    fields = {str(k).lower(): v for k, v in value.items() if k is not None}
    for name in TEXT_FIELDS:
        candidate = fields.get(name)
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    return "\n".join(
        f"{k}: {v}"
        for k, v in value.items()
        if k is not None and str(k).lower() not in ID_FIELDS and _scalar(v)
    )


def record_id(value: Any) -> str | None:
    """A record's own id (external_id or id), if it has one."""
    if not isinstance(value, dict):
        return None
    fields = {str(k).lower(): v for k, v in value.items() if k is not None}
    for name in ID_FIELDS:
        candidate = fields.get(name)
        if _scalar(candidate) and not isinstance(candidate, bool):
            return clip(str(candidate))
    return None


def clip(text: str, limit: int = 256) -> str:
    """text, keeping its end if it is longer than an external id may be."""
    return text if len(text) <= limit else text[-limit:]
