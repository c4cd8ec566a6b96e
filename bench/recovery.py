"""Benchmark: how long `docsort up` takes to finish the work after each kind of kill.

Each run starts `docsort up` (its own Redis, API, worker with a prefork pool, beat, Flower) against the
fake provider (tests/fake_provider.py, answering in `--delay` seconds), posts documents, kills something
while requests are in flight, and times how long until every document is done or needs review. A run
without a kill, in the same session, is the baseline. Kinds:

    pool    SIGKILL every pool process of the worker (an OOM kill); Celery starts new ones
    beat    SIGKILL beat; the supervisor restarts it (timed until it runs the reconciler again)
    worker  SIGKILL the worker's whole process group; the supervisor restarts it, the lease expires
    stack   SIGKILL `docsort up` itself (the watchdog ends the rest), then start it again

Run: .venv/bin/python -m bench.recovery --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from core.config import WorkerSettings
from docsort.services import free_port
from tests.processes import FakeProvider, wait_for
from tests.test_healing import TEXTS, Up, alive, children, final, post
from tests.test_ledger import PRICES, fake_tiers

WORKER = WorkerSettings(
    concurrency=2, flush_interval_s=0.1, lease_grace_s=5, requeue_after_s=5, reconcile_every_s=5
)
TIMEOUT_S = 10.0


def env_for(tmp: Path, provider: FakeProvider) -> dict[str, str]:
    port = int(provider.url.rsplit(":", 1)[1])
    tiers = [
        t.model_dump(mode="json") | {"api_key": "not-needed"} for t in fake_tiers(port, timeout_s=TIMEOUT_S)
    ]
    os.environ.pop("DOCSORT_REDIS_URL", None)
    return {
        "DOCSORT_DATA_DIR": str(tmp / "data"),
        "DOCSORT_DATABASE_URL": f"sqlite:///{tmp / 'docsort.db'}",
        "DOCSORT_MODELS": json.dumps(tiers),
        "DOCSORT_WORKER": WORKER.model_dump_json(),
        "DOCSORT_API__PORT": str(free_port()),
        "DOCSORT_FLOWER__PORT": str(free_port()),
        "DOCSORT_LOG_JSON": "false",
    }


def heartbeat(api: str) -> float | None:
    value: float | None = httpx.get(f"{api}/v1/stats", timeout=10).json()["reconciler"]["last_run_s_ago"]
    return value


def one(kind: str, delay: float, docs: int) -> dict[str, Any]:
    """One run: up, post, kill (unless baseline), time to every document final."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        tmp = Path(folder)
        provider = FakeProvider(free_port(), tmp / "fake.log", PRICES)
        provider.configure(delay_s=delay)
        env = env_for(tmp, provider)
        up = Up(env, tmp / "up.log")
        try:
            up.ready()
            texts = [f"{TEXTS[i % len(TEXTS)]} (copy {i} {time.time()})" for i in range(docs)]
            ids = post(up.api, texts)
            wait_for(lambda: provider.bill()["requests"], 30, "a request in flight", interval=0.1)
            services = up.services()
            killed = time.monotonic()
            if kind == "pool":
                for pid in children(services["worker"]["pid"]):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            elif kind == "beat":
                os.kill(services["beat"]["pid"], signal.SIGKILL)
                time.sleep(1)  # a heartbeat from before the kill must not count
                wait_for(
                    lambda: (h := heartbeat(up.api)) is not None and h < time.monotonic() - killed,
                    120,
                    "a reconcile after the kill",
                )
            elif kind == "worker":
                os.killpg(services["worker"]["pid"], signal.SIGKILL)
            elif kind == "stack":
                everything = up.everything()
                up.kill()  # the watchdog ends the rest; a new stack can bind the ports once they are gone
                wait_for(lambda: not any(alive(p) for p in everything), 60, "the old stack to end", 0.1)
                up = Up(env, tmp / "up2.log")
                up.ready()
            took_until = wait_for(
                lambda: final(up.api, ids) and time.monotonic(), 600, "every document final", 0.2
            )
            stats = httpx.get(f"{up.api}/v1/stats", timeout=10).json()
            return {
                "kind": kind,
                "seconds": round(took_until - killed, 2),
                "bound_s": stats["reconciler"]["recovery_bound_s"],
                "restarts": {k: v["restarts"] for k, v in (stats["services"] or {}).items() if v["restarts"]},
            }
        finally:
            everything = up.everything()
            up.kill()
            provider.kill()
            wait_for(lambda: not any(alive(p) for p in everything), 60, "the stack to end", 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--docs", type=int, default=24)
    parser.add_argument("--delay", type=float, default=1.0, help="Seconds the fake takes per request")
    parser.add_argument("--kinds", default="none,pool,beat,worker,stack")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeats):
        for kind in args.kinds.split(","):
            row = one(kind, args.delay, args.docs)
            rows.setdefault(kind, []).append(row)
            print(json.dumps(row), flush=True)
    base = statistics.median(r["seconds"] for r in rows.get("none", [])) if "none" in rows else None
    for kind, runs in rows.items():
        seconds = [r["seconds"] for r in runs]
        ratio = f"{statistics.median(seconds) / base:.2f}x the no-kill run" if base else ""
        print(
            f"recovery {kind}: median {statistics.median(seconds):.1f}s {seconds} (bound {runs[0]['bound_s']:.0f}s) {ratio}"
        )


if __name__ == "__main__":
    main()
