"""The one fake, at the HTTP seam: an OpenAI-compatible endpoint that answers what a test scripts.

Real endpoints cannot be made to answer 429, garbage or a missing ref on demand; this can.
It is handed to the `openai` client as an httpx2.MockTransport, so everything above HTTP is real.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2  # the HTTP library of the openai client (a fork of httpx)

Reply = httpx2.Response | Callable[[dict[str, Any]], httpx2.Response]


def chat(content: str, *, prompt_tokens: int = 100, completion_tokens: int = 20) -> httpx2.Response:
    """A chat completion whose message content is content."""
    return httpx2.Response(
        200,
        json={
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
    )


def answer(results: list[dict[str, Any]], **usage: int) -> httpx2.Response:
    """A well-formed batch answer."""
    return chat(json.dumps({"results": results}), **usage)


def label_all(label: str, confidence: float = 0.99) -> Callable[[dict[str, Any]], httpx2.Response]:
    """A reply that labels every ref the request names."""

    def reply(request: dict[str, Any]) -> httpx2.Response:
        user = request["messages"][-1]["content"]
        refs = [int(r) for r in user.split("refs ", 1)[1].split(".", 1)[0].split(", ")]
        return answer([{"ref": r, "label": label, "confidence": confidence} for r in refs])

    return reply


class ScriptedEndpoint:
    """Answers requests with scripted replies in order; the last one repeats. Keeps every request."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.request_ids: list[str | None] = []  # each request's X-Client-Request-Id

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        self.request_ids.append(request.headers.get("x-client-request-id"))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return reply(body) if callable(reply) else reply

    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self.handler))
