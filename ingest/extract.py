"""Text from uploaded or imported files, by extension, with well-kept libraries."""

from __future__ import annotations

import io
from pathlib import PurePosixPath

from core.errors import InvalidInput, UnsupportedMediaType

TEXT_TYPES = {".txt", ".md", ".markdown", ".text"}
SUPPORTED = TEXT_TYPES | {".html", ".htm", ".pdf", ".docx"}


def decode(data: bytes, *, name: str = "document") -> str:
    """Bytes as text: UTF-8 (BOM allowed), UTF-16 with a BOM; anything else is refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{name}: invalid UTF-16 at byte {exc.start}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{name}: not valid UTF-8 (byte {exc.start}); docsort accepts UTF-8 or UTF-16 with a BOM"
        ) from exc


def extension(name: str) -> str:
    """The lower-case extension of a file name."""
    return PurePosixPath(name).suffix.lower()


def extract(name: str, data: bytes) -> str:
    """The text of a file called name; UnsupportedMediaType or InvalidInput when there is none."""
    ext = extension(name)
    if ext in TEXT_TYPES:
        return decode(data, name=name)
    if ext in {".html", ".htm"}:
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(decode(data, name=name), "html.parser")
        for tag in soup(["script", "style", "noscript", "template"]):
            tag.decompose()
        return soup.get_text("\n", strip=True)
    if ext == ".pdf":
        return _pdf(name, data)
    if ext == ".docx":
        return _docx(name, data)
    raise UnsupportedMediaType(
        f"{name}: unsupported file type {ext or '(none)'}; supported: {', '.join(sorted(SUPPORTED))}"
    )


def _pdf(name: str, data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n".join((page.extract_text() or "") for page in reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise InvalidInput(f"{name}: unreadable PDF ({type(exc).__name__})") from exc


def _docx(name: str, data: bytes) -> str:
    import zipfile

    from docx import Document as Docx

    try:
        document = Docx(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise InvalidInput(f"{name}: unreadable DOCX ({type(exc).__name__})") from exc
    return "\n".join(p.text for p in document.paragraphs)
