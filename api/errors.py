"""The one place that maps errors to HTTP: RFC 9457 problem+json bodies, never a bare 500."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import errors

log = logging.getLogger("docsort.api")

STATUS: list[tuple[type[errors.DocsortError], int]] = [
    (errors.NotFound, 404),
    (errors.Forbidden, 403),
    (errors.Conflict, 409),
    (errors.PayloadTooLarge, 413),
    (errors.UnsupportedMediaType, 415),
    (errors.InvalidInput, 422),
    (errors.InputError, 400),
    (errors.Unauthorized, 401),
    (errors.Unavailable, 503),
    (errors.ModelError, 502),
]
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An application/problem+json response."""
    body = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def install(app: FastAPI) -> None:
    """Register the handlers on app."""

    @app.exception_handler(errors.DocsortError)
    async def _docsort(_: Request, exc: errors.DocsortError) -> JSONResponse:
        status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
        extra: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if isinstance(exc, errors.PayloadTooLarge):
            extra["limit"] = exc.limit
        if isinstance(exc, errors.Unavailable):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, errors.Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        return problem(status, str(exc), headers or None, **extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {
                "loc": list(err.get("loc", ())),
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        where = "; ".join(f"{'.'.join(map(str, f['loc']))}: {f['msg']}" for f in fields[:5])
        return problem(422, f"invalid request: {where}", errors=fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's "error parsing the body" (e.g. bytes that are not UTF-8): unreadable input.
            cause = type(exc.__cause__).__name__
            return problem(422, f"the request body could not be read as JSON ({cause}); send UTF-8 JSON")
        return problem(exc.status_code, str(exc.detail), dict(exc.headers or {}) or None)

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    async def _db_down(_: Request, exc: sqlalchemy.exc.OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc.__class__.__name__)
        return problem(503, "the database is unavailable; nothing was stored", {"Retry-After": "5"})

    @app.exception_handler(sqlalchemy.exc.DataError)
    async def _unstorable(_: Request, exc: sqlalchemy.exc.DataError) -> JSONResponse:
        # PostgreSQL refuses NUL characters in text and out-of-range values; the input was bad.
        log.info("database refused a value: %s", exc.orig.__class__.__name__)
        return problem(422, "a value in the request cannot be stored or searched (e.g. a NUL character)")

    @app.exception_handler(UnicodeEncodeError)
    async def _unencodable(_: Request, exc: UnicodeEncodeError) -> JSONResponse:
        # Only request text can hold unpaired surrogates (JSON "\ud800" escapes); nothing is stored.
        return problem(422, "the request has text that is not valid Unicode (an unpaired surrogate)")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, "internal error; it has been logged")
