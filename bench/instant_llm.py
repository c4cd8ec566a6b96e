"""An OpenAI-compatible endpoint that answers instantly, so that benchmarks measure the pipeline.

It is a benchmark stand-in, not a model: every ref in the request gets the first allowed label.
Run: python -m bench.instant_llm PORT
"""

from __future__ import annotations

import json
import re
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

REFS = re.compile(r"refs ([0-9, ]+)\.")
LABELS = re.compile(r"Allowed labels: ([^\n]+)\.")


async def completions(request: Request) -> JSONResponse:
    """Label every ref with the first allowed label."""
    body = await request.json()
    user = body["messages"][-1]["content"]
    refs = [int(r) for r in REFS.search(user).group(1).split(", ")]  # type: ignore[union-attr]
    label = LABELS.search(user).group(1).split(", ")[0]  # type: ignore[union-attr]
    content = json.dumps({"results": [{"ref": r, "label": label, "confidence": 0.99} for r in refs]})
    return JSONResponse(
        {
            "id": "instant",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "instant"),
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
            ],
            "usage": {
                "prompt_tokens": 40 * len(refs) + 200,
                "completion_tokens": 12 * len(refs),
                "total_tokens": 0,
            },
        }
    )


async def models(_: Request) -> JSONResponse:
    """The one model it serves."""
    return JSONResponse({"object": "list", "data": [{"id": "instant", "object": "model"}]})


app = Starlette(
    routes=[Route("/v1/chat/completions", completions, methods=["POST"]), Route("/v1/models", models)]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
