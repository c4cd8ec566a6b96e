"""Console sessions: a signed, HTTP-only cookie holding the API key's id, a CSRF token and the last review.

With `api.require_auth` on, every page but the login needs a session from a live key; off, an anonymous
session is made on the first visit (it still carries a CSRF token: forms are protected either way).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from api.deps import SessionDep, SettingsDep
from core.errors import Forbidden, Unauthorized
from store.models import ApiKey

COOKIE = "docsort_console"


@dataclass(frozen=True)
class ConsoleSession:
    """Who is using the console, the token their forms must carry, and their last review (for undo)."""

    key_id: int  # 0: anonymous (require_auth off)
    csrf: str
    last_review: int | None = None  # the document whose review `u` undoes

    def with_last_review(self, document_id: int | None) -> ConsoleSession:
        return replace(self, last_review=document_id)


def serializer(request: Request) -> URLSafeTimedSerializer:
    """The app's cookie signer (its secret from settings, or one made at start)."""
    signer: URLSafeTimedSerializer = request.app.state.console_signer
    return signer


def make_signer(secret: str | None) -> URLSafeTimedSerializer:
    """A signer for session cookies."""
    return URLSafeTimedSerializer(secret or secrets.token_urlsafe(32), salt="docsort-console")


def read(request: Request, max_age_s: float) -> ConsoleSession | None:
    """The session in the request's cookie, if it is there, signed by us and not expired."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data: dict[str, Any] = serializer(request).loads(raw, max_age=int(max_age_s))
    except BadSignature:
        return None
    return ConsoleSession(key_id=int(data["k"]), csrf=str(data["c"]), last_review=data.get("r"))


def write(response: Response, request: Request, session: ConsoleSession, max_age_s: float) -> None:
    """Set the session cookie: HTTP-only, same-site strict, secure over HTTPS."""
    value = serializer(request).dumps({"k": session.key_id, "c": session.csrf, "r": session.last_review})
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(max_age_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
    )


def new(key_id: int) -> ConsoleSession:
    """A fresh session for a key (0: anonymous)."""
    return ConsoleSession(key_id=key_id, csrf=secrets.token_urlsafe(24))


def current(request: Request, settings: SettingsDep, db: SessionDep) -> ConsoleSession:
    """The caller's console session; Unauthorized without one (or with a revoked key)."""
    max_age = settings.api.session_hours * 3600
    session = read(request, max_age)
    if session is None:
        if settings.api.require_auth:
            raise Unauthorized("log in to the console with an API key")
        session = new(0)
        request.state.console_new = session  # the page sets the cookie
    elif settings.api.require_auth:
        key = db.get(ApiKey, session.key_id)
        if key is None or key.revoked_at is not None:
            raise Unauthorized("the API key of this session is revoked; log in again")
    request.state.console = session
    return session


def check_csrf(session: ConsoleSession, token: str | None) -> None:
    """Forbidden unless a form carries the session's CSRF token."""
    if not token or not hmac.compare_digest(token, session.csrf):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page")


ConsoleDep = Annotated[ConsoleSession, Depends(current)]
