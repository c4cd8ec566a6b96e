"""Secrets in settings: which are placeholders, where they are, and URLs shown without them."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "docsort", "admin", "password", "secret"}


def is_placeholder(value: str) -> bool:
    """Whether value is a default or documentation stand-in ("docsort", "sk-...", "<key>")."""
    text = value.strip().lower()
    return text in PLACEHOLDER_SECRETS or "..." in text or (text.startswith("<") and text.endswith(">"))


def secret_values(model: BaseModel, path: str = "") -> dict[str, str]:
    """Every secret in model by its path: SecretStr fields and passwords inside URL strings."""
    found: dict[str, str] = {}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, SecretStr):
            found[where] = value.get_secret_value()
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{where}.{name}" if where else name)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")
        elif isinstance(value, str) and "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found[f"{where}.password"] = unquote(password)

    walk(model, path)
    return found


def mask_url(url: str) -> str:
    """url with its password, if any, shown as ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
