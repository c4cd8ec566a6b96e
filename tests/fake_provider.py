"""A fake OpenAI-compatible provider, run as its own process, that keeps its own bill: the one fake of the
ledger tests, at the HTTP seam. Real endpoints cannot be made to answer 429, time out after billing, or
send a truncated body on demand; this one can, on any pass or only on re-asks.

    python -m tests.fake_provider --port 8123 [--price fake-small=0.15,0.60 ...]

Answers: each document's label is the first allowed label named in its text (else a label picked by a
hash of the text), with confidence 0.95, or 0.1 where the text says "unsure". Usage: prompt tokens are
the words of the messages, completion tokens the words of the answer plus one. A request is billed once
the fake has computed its answer, whether or not the client is still there to read it (as providers
bill); error answers (429, 500) are not billed.

Control endpoints:
    POST /_faults  {"faults": [{"kind", "when", "count", "seconds", "retry_after"}]}
        kind: 429 | 500 | timeout (bill, then wait `seconds` before answering) | truncated (bill, send
        half the body) | invalid (bill, answer a label outside the taxonomy) | hold (bill, wait
        `seconds`) | slow (wait `seconds`, then answer normally)
        when: any | batch (2+ documents) | single (1 document: re-asks, or batch size 1)
    POST /_config  {"delay_s": float, "confidence": float, "wrong_for": [model, ...]}
        wrong_for: those models answer, confidently, the label after the right one (a tier gone bad)
    GET  /_bill    {"requests": {client request id: {...}}, "total_nanousd": int}
    POST /_reset
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_DOC = re.compile(r"<<<DOC ref=(\d+) tag=\w+>>>\n(.*?)\n<<<END tag=\w+>>>", re.DOTALL)
_LABELS = re.compile(r"Allowed labels: (.*)\.\s*$", re.DOTALL)


class Provider:
    """The fake's state: scripted faults, answer settings, and the bill."""

    def __init__(self, prices: dict[str, tuple[float, float]]) -> None:
        self.lock = threading.Lock()
        self.prices = prices
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.faults: list[dict[str, Any]] = []
            self.delay_s = 0.0
            self.confidence = 0.95
            self.wrong_for: set[str] = set()
            self.bill: dict[str, dict[str, Any]] = {}

    def take_fault(self, documents: int) -> dict[str, Any] | None:
        """The first scripted fault that applies to a request of this many documents, consumed once."""
        with self.lock:
            for fault in self.faults:
                when = fault.get("when", "any")
                if when == "any" or (when == "batch") == (documents > 1):
                    fault["count"] = int(fault.get("count", 1)) - 1
                    if fault["count"] <= 0:
                        self.faults.remove(fault)
                    return dict(fault)
        return None

    def charge(self, key: str, response_id: str, model: str, prompt: int, completion: int) -> None:
        """Put a request on the bill (nano-USD at this fake's own prices)."""
        price_in, price_out = self.prices.get(model, (0.0, 0.0))
        cost = round((prompt * price_in + completion * price_out) * 1000)
        with self.lock:
            self.bill[key] = {
                "response_id": response_id,
                "model": model,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost_nanousd": cost,
                "billed_at": time.time(),
            }


def answer(body: dict[str, Any], confidence: float, invalid: bool, wrong: bool = False) -> tuple[str, int]:
    """The answer content for a request and how many documents it names."""
    user = body["messages"][-1]["content"]
    labels_match = _LABELS.search(user)
    labels = [x.strip() for x in labels_match.group(1).split(",")] if labels_match else ["A"]
    results = []
    docs = _DOC.findall(user)
    for ref, text in docs:
        lowered = text.lower()
        named = [label for label in labels if label.lower() in lowered]
        digest = int(hashlib.sha256(text.encode()).hexdigest(), 16)
        label = named[0] if named else labels[digest % len(labels)]
        if wrong:
            label = labels[(labels.index(label) + 1) % len(labels)]
        results.append(
            {
                "ref": int(ref),
                "label": "Not-A-Label" if invalid else label,
                "confidence": 0.1 if "unsure" in lowered else confidence,
            }
        )
    return json.dumps({"results": results}), len(docs)


def words(text: str) -> int:
    return len(text.split())


def make_handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(data).encode()
            self._send(status, raw, headers)

        def _send(self, status: int, raw: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up: billed all the same

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            data: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
            return data

        def do_GET(self) -> None:
            if self.path.endswith("/models"):
                self._json(
                    200, {"object": "list", "data": [{"id": m, "object": "model"} for m in provider.prices]}
                )
            elif self.path == "/_bill":
                with provider.lock:
                    bill = dict(provider.bill)
                self._json(
                    200, {"requests": bill, "total_nanousd": sum(b["cost_nanousd"] for b in bill.values())}
                )
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/_faults":
                with provider.lock:
                    provider.faults += body.get("faults", [])
                self._json(200, {"ok": True})
            elif self.path == "/_config":
                with provider.lock:
                    provider.delay_s = float(body.get("delay_s", provider.delay_s))
                    provider.confidence = float(body.get("confidence", provider.confidence))
                    provider.wrong_for = set(body.get("wrong_for", provider.wrong_for))
                self._json(200, {"ok": True})
            elif self.path == "/_reset":
                provider.reset()
                self._json(200, {"ok": True})
            elif self.path.endswith("/chat/completions"):
                self._complete(body)
            else:
                self._json(404, {"error": {"message": "not found"}})

        def _complete(self, body: dict[str, Any]) -> None:
            key = self.headers.get("X-Client-Request-Id") or f"anon-{uuid.uuid4().hex}"
            user = body["messages"][-1]["content"]
            fault = provider.take_fault(len(_DOC.findall(user)))
            kind = fault["kind"] if fault else "ok"
            if kind == "429":
                retry = str(fault.get("retry_after", 1)) if fault else "1"
                self._json(
                    429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"Retry-After": retry}
                )
                return
            if kind == "500":
                self._json(500, {"error": {"message": "server error", "type": "server_error"}})
                return
            if kind == "slow" and fault:
                time.sleep(float(fault.get("seconds", 1)))
            if provider.delay_s:
                time.sleep(provider.delay_s)
            wrong = str(body.get("model")) in provider.wrong_for
            content, _ = answer(body, provider.confidence, invalid=kind == "invalid", wrong=wrong)
            prompt = sum(words(m["content"]) for m in body["messages"])
            completion = words(content) + 1
            response_id = f"chatcmpl-{uuid.uuid4().hex[:20]}"
            model = str(body.get("model", "fake"))
            provider.charge(key, response_id, model, prompt, completion)
            if kind in ("timeout", "hold") and fault:
                time.sleep(float(fault.get("seconds", 30)))
            raw = json.dumps(
                {
                    "id": response_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": content},
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                    },
                }
            ).encode()
            if kind == "truncated":
                raw = raw[: len(raw) // 2]
            self._send(200, raw)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--price", action="append", default=[], help="model=input,output (USD per 1M)")
    args = parser.parse_args()
    prices = {}
    for item in args.price:
        model, _, pair = item.partition("=")
        price_in, price_out = (float(x) for x in pair.split(","))
        prices[model] = (price_in, price_out)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Provider(prices)))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
