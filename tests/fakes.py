"""The one fake, at the HTTP seam: an OpenAI-compatible endpoint that answers what a test scripts.

Real endpoints cannot be made to answer 429, garbage or a missing ref on demand; this can.
It is handed to the `openai` client as an httpx.MockTransport, so everything above HTTP is real.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2 as httpx  # the HTTP library of the openai client (a fork of httpx)

Reply = httpx.Response | Callable[[dict[str, Any]], httpx.Response]


def chat(content: str, *, prompt_tokens: int = 100, completion_tokens: int = 20) -> httpx.Response:
    """A chat completion whose message content is content."""
    return httpx.Response(
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


def answer(results: list[dict[str, Any]], **usage: int) -> httpx.Response:
    """A well-formed batch answer."""
    return chat(json.dumps({"results": results}), **usage)


def label_all(label: str, confidence: float = 0.99) -> Callable[[dict[str, Any]], httpx.Response]:
    """A reply that labels every ref the request names."""

    def reply(request: dict[str, Any]) -> httpx.Response:
        user = request["messages"][-1]["content"]
        refs = [int(r) for r in user.split("refs ", 1)[1].split(".", 1)[0].split(", ")]
        return answer([{"ref": r, "label": label, "confidence": confidence} for r in refs])

    return reply


class ScriptedEndpoint:
    """Answers requests with scripted replies in order; the last one repeats. Keeps every request."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return reply(body) if callable(reply) else reply

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))
