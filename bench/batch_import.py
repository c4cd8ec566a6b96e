"""Benchmark: the same S3 import synchronously and through the Batch API; cost per 1,000 documents.

Real parts: SeaweedFS (S3), Redis, a worker and beat (processes), the API, and llama.cpp's server
(SmolLM2-135M) answering every request. The provider is the fake Batch API (tests/fake_batch_api.py),
which forwards chat requests and batch lines to llama.cpp and bills them with its own prices: full
price for synchronous requests, half for batch lines. Costs come from its bills, not from docsort.

Each mode imports the same --n AG News dev texts into a fresh database (one tier, as the small tier;
threshold 0, so that labels are the model's first answer in both modes). Both modes pack the same
documents into the same requests (printed: `packed requests alike`), and with `prompt_tag_key` set the
same documents make the same prompt (the fence tag is a keyed hash, not random), so the deterministic
model gives both modes the same answers and the same re-asks: the ratio is what the batch path costs
for the same work. The batch mode's provider
holds each batch for --wait seconds (validating), and the load docsort puts on the broker meanwhile is
measured as Redis commands per second (beat's periodic jobs and the worker's polls; the database sees
one small read per shard per poll, `docsort.batch_poll`).

Run: .venv/bin/python -m bench.batch_import --n 40 --wait 30
Prints, last: `ratio <batch cost / sync cost>`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

from core.config import WorkerSettings
from core.tiers import GPT_4O_MINI, ModelTier
from docsort.services import Supervisor, free_port, llama_services, redis_service
from tests.processes import BeatProcess, WorkerProcess, wait_for
from tests.s3_fixtures import ACCESS_KEY, BUCKET, SECRET_KEY, put_many, s3_client, seaweed_service
from tests.test_batch_api import FakeBatchAPI

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT.parent / "shared" / "datasets" / "ag_news_test.dev.jsonl"
WEIGHTS = ROOT / ".docsort" / "models"


def tier(port: int, batch: bool) -> ModelTier:
    return ModelTier(
        name="small",
        kind="openai",
        model="batch-small",
        base_url=f"http://127.0.0.1:{port}/v1",
        transport="json_schema",
        confidence="stated",
        top_logprobs=0,
        tokenizer="approx",
        batch_size=4,
        max_output_tokens=64,
        doc_token_budget=200,
        timeout_s=300.0,
        threshold=0.0,
        price=GPT_4O_MINI,
        batch_api="imports" if batch else "off",
        batch_flush_s=0.0,
    )


def run(mode: str, n: int, wait: float, llama_port: int, endpoint: str, redis_url: str) -> dict[str, Any]:
    """Import the texts in one mode; the provider's bill, labels, and the load while waiting."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.config import Settings

    folder = Path(tempfile.mkdtemp())
    fake = FakeBatchAPI(free_port(), llama_port, folder / "fake.log")
    port = int(fake.url.rsplit(":", 1)[1])
    worker_settings = WorkerSettings(concurrency=1, flush_interval_s=0.2, reconcile_every_s=2)
    settings = Settings(
        data_dir=folder / "data",
        weights_dir=WEIGHTS,
        database_url=f"sqlite:///{folder / 'db.sqlite'}",
        redis_url=redis_url,
        models=[tier(port, mode == "batch")],
        prompt_tag_key=SecretStr("bench"),  # the same documents, the same prompt in both modes
        worker=worker_settings,
        log_json=False,
    )
    redis.Redis.from_url(redis_url).flushdb()
    if mode == "batch":
        fake.faults(delay_s=wait)
    worker = WorkerProcess(settings, folder / "worker.log")
    beat = BeatProcess(settings, folder / "beat.log")
    started = time.monotonic()
    try:
        with TestClient(create_app(settings)) as client:
            body = {"source": f"s3://{BUCKET}/{mode}/", "endpoint_url": endpoint, "batch": mode == "batch"}
            import_id = client.post("/v1/imports", json=body).json()["id"]
            load = None
            if mode == "batch":
                wait_for(lambda: fake.get("/_stats")["batches_created"] >= 1, 300, "a batch")
                load = _load_while(redis_url, min(wait * 0.8, 20))
            state = wait_for(
                lambda: (s := client.get(f"/v1/imports/{import_id}").json())["status"] == "done" and s,
                3600,
                "the import",
                interval=1,
            )
            docs = client.get(f"/v1/imports/{import_id}/documents", params={"limit": 1000}).json()["data"]
    finally:
        worker.stop()
        beat.stop()
        bill = fake.get("/_bill")
        fake.kill()
    labels = {d["external_id"].split("/", 1)[-1]: d["label"] for d in docs}  # the key without the mode
    key_of = {d["id"]: d["external_id"].split("/", 1)[-1] for d in docs}
    return {
        "mode": mode,
        "documents": len(docs),
        "seconds": round(time.monotonic() - started, 1),
        "cost_nanousd": bill["total_nanousd"],
        "per_1k_usd": bill["total_nanousd"] / 1e9 * 1000 / max(len(docs), 1),
        "batch_lines": len(bill["lines"]),
        "sync_requests": len(bill["sync"]),
        "needs_review": state["needs_review"],
        "load_while_waiting": load,
        "labels": labels,
        "asked": _asked(settings.database_url, key_of),
    }


def _asked(database_url: str, key_of: dict[int, str]) -> list[tuple[str, tuple[str, ...]]]:
    """Each request docsort made (purpose and document keys), in order: how the mode packed them."""
    from sqlmodel import Session, col, select

    from store.db import make_engine
    from store.models import ModelRequest

    engine = make_engine(database_url)
    with Session(engine) as session:
        rows = session.exec(select(ModelRequest).order_by(col(ModelRequest.created_at))).all()
    engine.dispose()
    return [(r.purpose, tuple(key_of.get(i, str(i)) for i in r.doc_ids)) for r in rows]


def _load_while(redis_url: str, seconds: float) -> dict[str, float]:
    """Redis commands per second while a batch waits at the provider (docsort's own polling)."""
    client = redis.Redis.from_url(redis_url)
    before = int(client.info("stats")["total_commands_processed"])
    time.sleep(seconds)
    after = int(client.info("stats")["total_commands_processed"])
    return {"seconds": seconds, "redis_commands_per_s": round((after - before - 2) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--wait", type=float, default=30.0, help="Seconds the provider holds each batch")
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATASET.read_text().splitlines()][: args.n]
    supervisor = Supervisor(Path(tempfile.mkdtemp()) / "logs")
    try:
        service, endpoint = seaweed_service(Path(tempfile.mkdtemp()))
        supervisor.start(service)
        os.environ.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1"
        )
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        for mode in ("sync", "batch"):
            put_many(s3, BUCKET, {f"{mode}/{r['id']}.txt": r["text"].encode() for r in rows})
        redis_port = free_port()
        from core.config import Settings

        base = Settings(data_dir=Path(tempfile.mkdtemp()), weights_dir=WEIGHTS, models=[])
        supervisor.start(redis_service(base, redis_port))
        llama_port = free_port()
        from tests.conftest import offline_tiers

        offline = base.model_copy(update={"models": offline_tiers(llama_port)})
        for llama in llama_services(offline):
            supervisor.start(llama)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        sync = run("sync", args.n, args.wait, llama_port, endpoint, redis_url)
        batch = run("batch", args.n, args.wait, llama_port, endpoint, redis_url)
    finally:
        supervisor.stop()
    same = sum(sync["labels"].get(k) == v for k, v in batch["labels"].items())
    for result in (sync, batch):
        shown = {k: v for k, v in result.items() if k not in ("labels", "asked")}
        print(json.dumps(shown), flush=True)
    packed = {keys for purpose, keys in sync["asked"] if purpose == "classify"}
    alike = sum(keys in packed for purpose, keys in batch["asked"] if purpose == "classify")
    for result in (sync, batch):
        print(result["mode"], "asked:", json.dumps(result["asked"]), flush=True)
    print(f"packed requests alike in both modes: {alike}/{len(packed)}")
    print(f"same labels in both modes: {same}/{len(batch['labels'])}")
    print(f"per 1,000 documents: sync ${sync['per_1k_usd']:.4f}, batch ${batch['per_1k_usd']:.4f}")
    print(f"ratio {batch['cost_nanousd'] / sync['cost_nanousd']:.3f}")


if __name__ == "__main__":
    main()
