"""Pipeline throughput: API -> database -> Redis -> worker -> database, against plain Celery no-ops.

The LLM tiers are bench/instant_llm.py (answers instantly), so the pipeline itself is measured.
--cascade none (the default): two instant tiers and no local tier, on a one-line synthetic text.
--cascade default: the cascade docsort ships (a trained local tier first, then small and large, both
instant), on dev-set texts (bench/cascade_load.py): the local tier's share and accuracy are scored.
The no-op rate is measured before and after the pipeline; the last line printed is
`ratio <classified/s over the faster no-op rate, tasks/s>`.
Run: .venv/bin/python -m bench.throughput --n 20000 [--cascade default] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.cascade_load import DATASETS, Workload, document, score, teach, workload
from core import messaging
from core.config import AuditSettings, LocalSettings, Settings, WorkerSettings
from core.tiers import ModelTier, local_tier
from docsort.services import Supervisor, free_port, redis_service
from tests.processes import settings_env, wait_for


def peak_rss(pid: int) -> dict[str, float]:
    """Peak resident memory (VmHWM, MB) of a process ("main") and of each of its children."""
    pids = {"main": pid}
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids |= {f"child {c}": int(c) for c in children}
    except OSError:
        pass
    out = {}
    for name, p in pids.items():
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[name] = round(int(line.split()[1]) / 1024, 1)
        except OSError:
            continue
    return out


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process and its children together (VmHWM), in MB."""
    return round(sum(peak_rss(pid).values()), 1)


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child process logging to a file."""
    return subprocess.Popen(argv, env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def baseline(n: int, redis_url: str, concurrency: int, tmp: Path) -> dict[str, Any]:
    """Plain Celery: n no-op tasks sent, then consumed by one worker like docsort's."""
    client = redis.Redis.from_url(redis_url)
    client.delete("noop:done")
    env = {"NOOP_REDIS_URL": redis_url}
    os.environ["NOOP_REDIS_URL"] = redis_url
    from bench.noop_app import app

    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task("noop.count", args=[i], producer=producer)
    sent = time.perf_counter() - started
    worker = spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.noop_app:app",
            "worker",
            "-c",
            str(concurrency),
            "--loglevel",
            "WARNING",
        ],
        env,
        tmp / "noop-worker.log",
    )
    spawned = time.perf_counter()
    # The clock starts at the first task done, as docsort's starts with its worker up: a worker's boot
    # (a second or two, more on a busy machine) is not the queue's rate.
    first = wait_for(lambda: int(client.get("noop:done") or 0), 120, "the first no-op task", interval=0.01)
    started = time.perf_counter()
    wait_for(lambda: int(client.get("noop:done") or 0) >= n, 3600, "no-op tasks", interval=0.2)
    consumed = time.perf_counter() - started
    memory = peak_rss(worker.pid)
    worker.terminate()
    worker.wait()
    return {
        "sent_per_s": n / sent,
        "consumed_per_s": (n - first) / consumed,
        "boot_s": round(started - spawned, 2),
        "worker_peak_mb": round(sum(memory.values()), 1),
        "worker_peak_mb_by_process": memory,
    }


def pipeline(
    n: int, settings: Settings, per_post: int, tmp: Path, loads: list[Workload] | None = None
) -> dict[str, Any]:
    """n documents POSTed in chunks, then classified by one worker; loads: teach and stream those."""
    env = settings_env(settings) | {
        "DOCSORT_API__PORT": str(settings.api.port),
        "DOCSORT_LOG_JSON": "true",
        "DOCSORT_LOCAL": settings.local.model_dump_json(),
        "DOCSORT_AUDIT": settings.audit.model_dump_json(),
    }
    api = spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "api.entry:app",
            "--port",
            str(settings.api.port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env,
        tmp / "api.log",
    )
    base = f"http://127.0.0.1:{settings.api.port}"
    wait_for(lambda: _ok(f"{base}/healthz"), 60, "api")
    worker = spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.entry:app",
            "worker",
            "-Q",
            ",".join(messaging.queue_names(settings)),
            "-c",
            str(settings.worker.concurrency),
            "--loglevel",
            "WARNING",
        ],
        env,
        tmp / "worker.log",
    )
    out: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            # Taught before the clock starts: training is not what this measures.
            out["local_models"] = {w.name: teach(client, w) for w in loads or []}
            started = time.perf_counter()
            for start in range(0, n, per_post):
                docs = [
                    document(loads[i % len(loads)], i // len(loads))
                    if loads
                    else {"text": f"bench document {i}: markets, matches and missions"}
                    for i in range(start, min(n, start + per_post))
                ]
                client.post("/v1/documents", json={"documents": docs}).raise_for_status()
            accepted = time.perf_counter() - started
            last: dict[str, Any] = {}
            polls: list[float] = []

            def finished() -> bool:
                asked = time.perf_counter()
                stats = client.get("/v1/stats").json()
                polls.append(time.perf_counter() - asked)  # what watching costs the API and database
                if stats["tier_throughput"]["tiers"]:
                    last["tier_throughput"] = stats["tier_throughput"]  # the last window before the end
                counts = stats["documents"]
                return bool(counts.get("done", 0) + counts.get("needs_review", 0) >= n)

            wait_for(finished, 7200, "classification", interval=0.5)
            classified = time.perf_counter() - started
        api_mb, worker_mb = peak_rss(api.pid), peak_rss(worker.pid)
        return out | {
            "accepted_per_s": n / accepted,
            "classified_per_s": n / classified,
            "api_peak_mb": round(sum(api_mb.values()), 1),
            "worker_peak_mb": round(sum(worker_mb.values()), 1),
            "peak_mb_by_process": {"api": api_mb, "worker": worker_mb},
            "stats_poll_ms": round(1000 * sum(polls) / max(1, len(polls)), 1),
            **last,
        }
    finally:
        for proc in (worker, api):
            proc.terminate()
            proc.wait()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    """Run both, print ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--per-post", type=int, default=500, help="documents per POST")
    parser.add_argument("--batch-size", type=int, default=16, help="documents per model request")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--requests-per-task",
        type=int,
        default=None,
        help="worker.requests_per_task (default: the setting's)",
    )
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument(
        "--cascade",
        choices=["none", "default"],
        default="none",
        help="none: two instant tiers; default: a trained local tier first, as docsort ships",
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument(
        "--local-features",
        choices=["auto", "tfidf", "embeddings", "tfidf+embeddings"],
        default="auto",
        help="the local tier's features (local.features; auto is the shipped default)",
    )
    parser.add_argument(
        "--synchronous-commit",
        choices=["on", "off"],
        default="on",
        help="PostgreSQL: the worker's worker.synchronous_commit (off: commits return before the WAL flush)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="docsort-bench-"))
    sup = Supervisor(tmp / "logs")
    llm_port = free_port()
    instant = spawn([sys.executable, "-m", "bench.instant_llm", str(llm_port)], {}, tmp / "instant.log")
    try:
        redis_port = free_port()
        probe = Settings(data_dir=tmp, models=[ModelTier(name="x")])
        sup.start(redis_service(probe, redis_port))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        wait_for(lambda: _ok(f"http://127.0.0.1:{llm_port}/v1/models"), 30, "instant endpoint")
        base = baseline(args.n, redis_url, args.concurrency, tmp)
        redis.Redis.from_url(redis_url).flushall()
        tier: dict[str, Any] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{llm_port}/v1",
            "model": "instant",
            "transport": "json_object",
            "confidence": "stated",
            "tokenizer": "approx",
            "batch_size": args.batch_size,
            "request_token_budget": 100_000,
        }
        llm_tiers = [
            ModelTier(name="small", threshold=0.5, **tier),
            ModelTier(name="large", threshold=0.5, **tier),
        ]
        loads = [workload(d) for d in args.datasets] if args.cascade == "default" else None
        settings = Settings(
            data_dir=tmp / "data",
            database_url=args.database_url or f"sqlite:///{tmp / 'bench.db'}",
            redis_url=redis_url,
            models=[local_tier(), *llm_tiers] if loads else llm_tiers,
            worker=WorkerSettings(
                concurrency=args.concurrency,
                flush_interval_s=0.2,
                max_batches_per_dispatch=100,
                **({"requests_per_task": args.requests_per_task} if args.requests_per_task else {}),
                synchronous_commit=args.synchronous_commit == "on",
            ),
            # The instant tiers answer the first label whatever the text: learning from them, or
            # auditing the local tier against them, would retrain on or set aside a good model mid-run.
            local=LocalSettings(harvest="none", features=args.local_features) if loads else LocalSettings(),
            audit=AuditSettings(rate=0.0) if loads else AuditSettings(),
        )
        settings.api.port = free_port()
        settings.api.max_documents_per_request = max(args.per_post, 5000)
        result = pipeline(args.n, settings, args.per_post, tmp, loads)
        if loads:
            versions = {name: m["version"] for name, m in result["local_models"].items()}
            result["local_tier"] = score(settings.db_url, settings.data_dir, loads, versions)
        # The no-op rate again after the pipeline: on a shared machine it moved by 2x between runs, and
        # the ratio is taken against the faster of the two (the conservative one).
        redis.Redis.from_url(redis_url).flushall()
        after = baseline(args.n, redis_url, args.concurrency, tmp)
    finally:
        instant.terminate()
        sup.stop()
    out = {
        "n": args.n,
        "cascade": args.cascade,
        "local_features": args.local_features if loads else None,
        "database": "PostgreSQL" if args.database_url else "SQLite",
        "worker_synchronous_commit": args.synchronous_commit,
        "batch_size": args.batch_size,
        "per_post": args.per_post,
        "concurrency": args.concurrency,
        "requests_per_task": settings.worker.requests_per_task,
        "load_average_end": os.getloadavg()[0],
        "baseline_noop": base,
        "baseline_noop_after": after,
        "docsort": result,
        "ratio_classified_to_noop": result["classified_per_s"]
        / max(base["consumed_per_s"], after["consumed_per_s"]),
        "ratio_to_noop_before_and_after": [
            result["classified_per_s"] / base["consumed_per_s"],
            result["classified_per_s"] / after["consumed_per_s"],
        ],
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    print(f"ratio {out['ratio_classified_to_noop']:.2f}")


if __name__ == "__main__":
    main()
