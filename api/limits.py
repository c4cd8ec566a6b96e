"""Input limits for every route: the request-size cap (413) and JSON values the API can store."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem
from core.errors import InvalidInput


def check_json_values(data: Any, *, where: str = "body") -> None:
    """InvalidInput for values that could be stored but never sent back as JSON.

    Python's JSON parser accepts NaN, Infinity, numbers that overflow to infinity and unpaired
    surrogate escapes ("\\ud800"); none is valid JSON on the way out, so none may come in.
    """
    try:
        json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{where} has text that is not valid Unicode (an unpaired surrogate)") from exc
    except ValueError as exc:
        raise InvalidInput(f"{where} has a number JSON cannot carry (NaN, Infinity or out of range)") from exc
    except RecursionError as exc:
        raise InvalidInput(f"{where} is nested too deeply") from exc


class BodyLimit:
    """ASGI middleware: stops reading a request body at limit bytes and answers 413 with the limit.

    A Content-Length over the limit is refused before the route runs. A body without one (chunked)
    is counted as it arrives; past the limit the route sees the client disconnect, whatever it
    answers is dropped, and the caller gets the 413 instead.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        seen = 0
        over = started = False

        async def counted() -> Message:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if not over:
                started = True
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body over {self.limit} bytes"
        await problem(413, detail, {"Connection": "close"}, limit=self.limit)(scope, receive, send)
