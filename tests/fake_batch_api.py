"""A fake OpenAI Batch API, run as its own process: files and batches endpoints driven by the real
`openai` client, each line answered by a real chat endpoint upstream (the llama.cpp server), with a bill
of its own at batch prices. It also answers synchronous chat completions (at full price) by the same
upstream, as an OpenAI-compatible provider does. The one fake of the Batch API tests, at the HTTP seam:
no real provider can be made to expire a batch or fail lines on demand.

    python -m tests.fake_batch_api --port 8124 --upstream http://127.0.0.1:8081/v1 \
        [--price smollm2-135m=0.15,0.60 ...]

llama.cpp's server answers HTTP 500 to `response_format: json_schema`, so the fake sends it
`{"type": "json_object", "schema": ...}` instead, as docsort's llamacpp tier kind does.

Control:
    POST /_faults {"fail_lines": n, "invalid_lines": n, "garbage_lines": n, "expire_after": n,
                   "shuffle": bool, "delay_s": s, "hold_create_s": s}
        fail_lines: the next n lines come back in the error file as server errors (transient);
        invalid_lines: the next n lines are refused as invalid requests (400);
        garbage_lines: the next n lines are answered (200, billed) with content that is not JSON;
        expire_after: a batch expires after answering n lines (the rest: batch_expired);
        shuffle: output lines come back in random order; delay_s: a batch waits this long before working;
        hold_create_s: the next batch is created at once, but its creation is answered this late.
    GET  /_bill   {"lines": {custom_id: {...}}, "sync": {request id: {...}}, "total_nanousd": int}
    GET  /_stats  {"batches_created": n, "files": n, "deleted_files": n}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

BATCH_DISCOUNT = 0.5


class State:
    """Files, batches, faults and the bill."""

    def __init__(
        self, upstream: str, prices: dict[str, tuple[float, float]], upstream_model: str | None = None
    ) -> None:
        self.lock = threading.Lock()
        self.upstream = upstream.rstrip("/")
        self.upstream_model = upstream_model
        self.prices = prices
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.faults: dict[str, Any] = {}
        self.bill_lines: dict[str, dict[str, Any]] = {}
        self.bill_sync: dict[str, dict[str, Any]] = {}
        self.stats = {"batches_created": 0, "files": 0, "deleted_files": 0}

    def cost(self, model: str, prompt: int, completion: int, batch: bool) -> int:
        price_in, price_out = self.prices.get(model, (0.0, 0.0))
        nano = (prompt * price_in + completion * price_out) * 1000
        return round(nano * (BATCH_DISCOUNT if batch else 1.0))

    def take(self, name: str) -> int:
        with self.lock:
            left = int(self.faults.get(name, 0))
            if left > 0:
                self.faults[name] = left - 1
                return 1
        return 0

    def add_file(self, data: bytes, purpose: str, filename: str) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
        }
        with self.lock:
            self.files[file_id] = meta
            self.contents[file_id] = data
            self.stats["files"] += 1
        return meta


def upstream_body(state: State, body: dict[str, Any]) -> dict[str, Any]:
    """A chat request as llama.cpp's server takes it (json_object with the schema, not json_schema), for
    the model it serves (the fake bills by the name the client asked for)."""
    body = dict(body)
    if state.upstream_model:
        body["model"] = state.upstream_model
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        body["response_format"] = {"type": "json_object", "schema": fmt["json_schema"]["schema"]}
    return body


def ask_upstream(state: State, body: dict[str, Any]) -> httpx.Response:
    """A chat request answered upstream, logged as the hash of what was asked and the answer."""
    sent = upstream_body(state, body)
    response = httpx.post(f"{state.upstream}/chat/completions", json=sent, timeout=600)
    asked = hashlib.sha256(json.dumps(sent, sort_keys=True).encode()).hexdigest()[:12]
    answer = (response.json().get("choices") or [{}])[0].get("message", {}).get("content")
    print(json.dumps({"upstream": asked, "answer": answer}), flush=True)  # same question, same answer?
    return response


def run_batch(state: State, batch_id: str) -> None:
    """Work a batch: each line through the upstream; then its output and error files."""
    with state.lock:
        batch = state.batches[batch_id]
        lines = state.contents[batch["input_file_id"]].decode().splitlines()
        delay = float(state.faults.get("delay_s", 0))
        expire_after = state.faults.pop("expire_after", None)
        shuffle = bool(state.faults.get("shuffle", False))
    time.sleep(delay)
    with state.lock:
        batch["status"] = "in_progress"
        batch["in_progress_at"] = int(time.time())
    outputs, errors = [], []
    done = 0
    for raw in lines:
        if not raw.strip():
            continue
        line = json.loads(raw)
        custom_id = line["custom_id"]
        if expire_after is not None and done >= int(expire_after):
            errors.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:12]}",
                    "custom_id": custom_id,
                    "response": None,
                    "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion window expired.",
                    },
                }
            )
            continue
        if state.take("invalid_lines"):
            errors.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:12]}",
                    "custom_id": custom_id,
                    "response": {
                        "status_code": 400,
                        "request_id": uuid.uuid4().hex,
                        "body": {
                            "error": {"message": "invalid request (fake)", "type": "invalid_request_error"}
                        },
                    },
                    "error": None,
                }
            )
            continue
        if state.take("fail_lines"):
            errors.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:12]}",
                    "custom_id": custom_id,
                    "response": {
                        "status_code": 500,
                        "request_id": uuid.uuid4().hex,
                        "body": {"error": {"message": "server error (fake)", "type": "server_error"}},
                    },
                    "error": None,
                }
            )
            continue
        response = ask_upstream(state, line["body"])
        body = response.json()
        if state.take("garbage_lines"):  # a model that answered, was billed, and wrote no JSON
            body["choices"][0]["message"] = {"role": "assistant", "content": "Sure! The label is"}
        body["model"] = line["body"].get("model")
        usage = body.get("usage") or {}
        model = str(line["body"].get("model"))
        prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        with state.lock:
            state.bill_lines[custom_id] = {
                "model": model,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost_nanousd": state.cost(model, prompt, completion, batch=True),
                "batch_id": batch_id,
            }
        outputs.append(
            {
                "id": f"batch_req_{uuid.uuid4().hex[:12]}",
                "custom_id": custom_id,
                "response": {
                    "status_code": response.status_code,
                    "request_id": uuid.uuid4().hex,
                    "body": body,
                },
                "error": None,
            }
        )
        done += 1
        with state.lock:
            batch["request_counts"] = {"total": len(lines), "completed": done, "failed": len(errors)}
    if shuffle:
        random.shuffle(outputs)
    with state.lock:
        batch["status"] = "finalizing"
    output_file = (
        state.add_file(
            "".join(json.dumps(o) + "\n" for o in outputs).encode(), "batch_output", "output.jsonl"
        )
        if outputs
        else None
    )
    error_file = (
        state.add_file("".join(json.dumps(e) + "\n" for e in errors).encode(), "batch_output", "errors.jsonl")
        if errors
        else None
    )
    with state.lock:
        batch["output_file_id"] = output_file["id"] if output_file else None
        batch["error_file_id"] = error_file["id"] if error_file else None
        batch["request_counts"] = {"total": len(lines), "completed": done, "failed": len(errors)}
        expired = expire_after is not None and done < len([x for x in lines if x.strip()])
        batch["status"] = "expired" if expired else "completed"
        batch["expired_at" if expired else "completed_at"] = int(time.time())


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _json(self, status: int, data: Any) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _raw(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/_bill":
                with state.lock:
                    lines, sync = dict(state.bill_lines), dict(state.bill_sync)
                total = sum(b["cost_nanousd"] for b in [*lines.values(), *sync.values()])
                self._json(200, {"lines": lines, "sync": sync, "total_nanousd": total})
            elif path == "/_stats":
                with state.lock:
                    self._json(200, dict(state.stats))
            elif path.endswith("/models"):
                self._json(
                    200, {"object": "list", "data": [{"id": m, "object": "model"} for m in state.prices]}
                )
            elif path == "/v1/batches":
                with state.lock:
                    data = sorted(state.batches.values(), key=lambda b: -b["created_at"])
                self._json(
                    200,
                    {"object": "list", "data": data, "has_more": False, "first_id": None, "last_id": None},
                )
            elif path.startswith("/v1/batches/"):
                with state.lock:
                    batch = state.batches.get(path.rsplit("/", 1)[-1])
                self._json(200, batch) if batch else self._json(404, {"error": {"message": "no such batch"}})
            elif path.startswith("/v1/files/") and path.endswith("/content"):
                file_id = path.split("/")[3]
                with state.lock:
                    data = state.contents.get(file_id)
                if data is None:
                    self._json(404, {"error": {"message": "no such file"}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif path.startswith("/v1/files/"):
                with state.lock:
                    meta = state.files.get(path.rsplit("/", 1)[-1])
                self._json(200, meta) if meta else self._json(404, {"error": {"message": "no such file"}})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_DELETE(self) -> None:
            file_id = self.path.rsplit("/", 1)[-1]
            with state.lock:
                existed = state.files.pop(file_id, None) is not None
                state.contents.pop(file_id, None)
                state.stats["deleted_files"] += existed
            self._json(200 if existed else 404, {"id": file_id, "object": "file", "deleted": existed})

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            if path == "/_faults":
                with state.lock:
                    state.faults.update(json.loads(self._raw() or b"{}"))
                self._json(200, {"ok": True})
            elif path == "/v1/files":
                self._upload()
            elif path == "/v1/batches":
                body = json.loads(self._raw())
                if body.get("input_file_id") not in state.files:
                    self._json(400, {"error": {"message": "no such input file"}})
                    return
                batch_id = f"batch_{uuid.uuid4().hex[:24]}"
                now = int(time.time())
                batch = {
                    "id": batch_id,
                    "object": "batch",
                    "endpoint": body["endpoint"],
                    "input_file_id": body["input_file_id"],
                    "completion_window": body["completion_window"],
                    "status": "validating",
                    "output_file_id": None,
                    "error_file_id": None,
                    "created_at": now,
                    "expires_at": now + 86400,
                    "request_counts": {"total": 0, "completed": 0, "failed": 0},
                    "metadata": body.get("metadata"),
                    "errors": None,
                }
                with state.lock:
                    state.batches[batch_id] = batch
                    state.stats["batches_created"] += 1
                threading.Thread(target=run_batch, args=(state, batch_id), daemon=True).start()
                with state.lock:
                    hold = float(state.faults.pop("hold_create_s", 0))
                time.sleep(hold)  # created, but answered late: a client killed meanwhile never learns its id
                self._json(200, batch)
            elif path.startswith("/v1/batches/") and path.endswith("/cancel"):
                with state.lock:
                    batch = state.batches.get(path.split("/")[3])
                    if batch:
                        batch["status"] = "cancelled"
                self._json(200, batch) if batch else self._json(404, {"error": {"message": "no such batch"}})
            elif path.endswith("/chat/completions"):
                body = json.loads(self._raw())
                response = ask_upstream(state, body)
                data = response.json()
                data["model"] = body.get("model")
                usage = data.get("usage") or {}
                model = str(body.get("model"))
                prompt, completion = (
                    int(usage.get("prompt_tokens", 0)),
                    int(usage.get("completion_tokens", 0)),
                )
                key = self.headers.get("X-Client-Request-Id") or uuid.uuid4().hex
                with state.lock:
                    state.bill_sync[key] = {
                        "model": model,
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "cost_nanousd": state.cost(model, prompt, completion, batch=False),
                    }
                self._json(response.status_code, data)
            else:
                self._json(404, {"error": {"message": "not found"}})

        def _upload(self) -> None:
            """multipart/form-data with `file` and `purpose` (what the openai client sends)."""
            boundary = (
                self.headers.get_content_type()
                and self.headers.get("Content-Type", "").split("boundary=")[-1]
            )
            raw = self._raw()
            parts = raw.split(b"--" + boundary.encode())
            data, purpose, filename = b"", "batch", "input.jsonl"
            for part in parts:
                head, _, body = part.partition(b"\r\n\r\n")
                body = body[:-2] if body.endswith(b"\r\n") else body
                if b'name="file"' in head:
                    data = body
                    if b"filename=" in head:
                        filename = head.split(b'filename="', 1)[1].split(b'"', 1)[0].decode()
                elif b'name="purpose"' in head:
                    purpose = body.decode().strip()
            self._json(200, state.add_file(data, purpose, filename))

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--price", action="append", default=[], help="model=input,output (USD per 1M)")
    parser.add_argument("--upstream-model", default=None, help="The model the upstream serves")
    args = parser.parse_args()
    prices = {}
    for item in args.price:
        model, _, pair = item.partition("=")
        price_in, price_out = (float(x) for x in pair.split(","))
        prices[model] = (price_in, price_out)
    server = ThreadingHTTPServer(
        ("127.0.0.1", args.port), make_handler(State(args.upstream, prices, args.upstream_model))
    )
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
