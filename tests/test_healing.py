"""`docsort up` heals: it restarts what dies, refuses a taken port, and takes every process it started
down with it, however it ends. Run as a user runs it, against the fake provider."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import WorkerSettings
from docsort.services import free_port
from tests.processes import FakeProvider, Process, wait_for
from tests.test_ledger import PRICES, TEXTS, fake_tiers

pytestmark = pytest.mark.slow
FAST = WorkerSettings(
    concurrency=2, flush_interval_s=0.1, lease_grace_s=2, requeue_after_s=3, reconcile_every_s=1
)
FINAL = {"done", "needs_review"}


class Up(Process):
    """`docsort up` in its own process group, configured by environment as a user would."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        super().__init__([sys.executable, "-m", "docsort.cli", "up"], env, log)
        self.api = f"http://127.0.0.1:{env['DOCSORT_API__PORT']}"
        self.status = Path(env["DOCSORT_DATA_DIR"]) / "services.json"

    def services(self) -> dict[str, Any]:
        """The services this `docsort up` reports (not a file left by an earlier one)."""
        try:
            data = json.loads(self.status.read_text())
        except (OSError, ValueError):
            return {}
        services: dict[str, Any] = data["services"] if data.get("supervisor_pid") == self.pid else {}
        return services

    def everything(self) -> list[int]:
        """Every process this `docsort up` started, with their children."""
        started = [s["pid"] for s in self.services().values()]
        return started + [d for pid in started for d in descendants(pid)]

    def ready(self, timeout: float = 120) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"docsort up exited: {self.log.read_text()[-3000:]}")
            services = self.services()
            return {"api", "worker", "beat", "flower"} <= set(services) and all(
                s["state"] == "up" for s in services.values()
            )

        wait_for(up, timeout, "docsort up", interval=0.5)


def children(pid: int) -> list[int]:
    """The direct children of a process."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; it waits only to be reaped


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[FakeProvider]:
    fake = FakeProvider(free_port(), tmp_path / "fake.log", PRICES)
    yield fake
    fake.kill()


def up_env(tmp_path: Path, provider: FakeProvider, **extra: str) -> dict[str, str]:
    port = int(provider.url.rsplit(":", 1)[1])
    tiers = [t.model_dump(mode="json") | {"api_key": "not-needed"} for t in fake_tiers(port, timeout_s=3.0)]
    env = {
        "DOCSORT_DATA_DIR": str(tmp_path / "data"),
        "DOCSORT_DATABASE_URL": f"sqlite:///{tmp_path / 'docsort.db'}",
        "DOCSORT_MODELS": json.dumps(tiers),
        "DOCSORT_WORKER": FAST.model_dump_json(),
        "DOCSORT_API__PORT": str(free_port()),
        "DOCSORT_FLOWER__PORT": str(free_port()),
        "DOCSORT_LOG_JSON": "false",
    }
    env.update(extra)
    os.environ.pop("DOCSORT_REDIS_URL", None)  # it starts its own Redis, as on a fresh machine
    return env


def post(api: str, texts: list[str]) -> list[int]:
    r = httpx.post(f"{api}/v1/documents", json={"documents": [{"text": t} for t in texts]}, timeout=30)
    assert r.status_code == 202, r.text
    return [d["id"] for d in r.json()["data"]]


def final(api: str, ids: list[int]) -> list[dict[str, Any]] | None:
    try:
        docs = [httpx.get(f"{api}/v1/documents/{i}", timeout=10).json() for i in ids]
    except httpx.HTTPError:
        return None
    return docs if all(d.get("status") in FINAL for d in docs) else None


def answered_once(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        requests = [a["request_id"] for a in doc["attempts"]]
        assert len(requests) == len(set(requests)), doc["attempts"]  # no request recorded twice
        answered = [a["tier"] for a in doc["attempts"] if a["outcome"] != "invalid"]
        assert len(answered) == len(set(answered)), doc["attempts"]  # one paid answer per tier


def test_up_refuses_a_taken_port(tmp_path: Path, provider: FakeProvider) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = up_env(tmp_path, provider, DOCSORT_API__PORT=str(port))
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "docsort.cli", "up"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    output = " ".join(result.stdout.split())  # rich wraps long lines
    assert f"127.0.0.1:{port} (api)" in output and "already in use" in output
    assert time.monotonic() - started < 30
    assert not (tmp_path / "data" / "services.json").exists()  # nothing was started


def test_nothing_outlives_a_killed_up(tmp_path: Path, provider: FakeProvider) -> None:
    up = Up(up_env(tmp_path, provider), tmp_path / "up.log")
    try:
        up.ready()
        # The worker counts as up once Redis answers; its prefork pool may still be starting.
        pool = wait_for(lambda: children(up.services()["worker"]["pid"]), 60, "the worker's pool")
        everything = up.everything()
        assert set(pool) <= set(everything) and len(everything) > len(up.services())
        os.kill(up.pid, signal.SIGKILL)  # the supervisor alone, as an OOM killer would
        wait_for(lambda: not any(alive(p) for p in everything), 60, "every child of docsort up to end")
    finally:
        up.kill()


def test_killed_pool_and_beat_come_back_and_finish_the_work(tmp_path: Path, provider: FakeProvider) -> None:
    provider.configure(delay_s=1.0)
    up = Up(up_env(tmp_path, provider), tmp_path / "up.log")
    try:
        up.ready()
        ids = post(up.api, TEXTS)
        wait_for(lambda: provider.bill()["requests"], 30, "a request in flight")
        services = up.services()
        pool = children(services["worker"]["pid"])
        assert pool
        for pid in [*pool, services["beat"]["pid"]]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        provider.configure(delay_s=0.0)
        started = time.monotonic()
        docs = wait_for(lambda: final(up.api, ids), 120, "every document final", interval=0.5)
        took = time.monotonic() - started
        answered_once(docs)
        stats = wait_for(
            lambda: (
                (s := httpx.get(f"{up.api}/v1/stats", timeout=10).json())["services"]["beat"]["state"] == "up"
                and s
            ),
            30,
            "beat back up",
        )
        assert stats["services"]["beat"]["restarts"] == 1
        assert stats["reconciler"]["last_run_s_ago"] is not None and not stats["reconciler"]["late"]
        ready = httpx.get(f"{up.api}/readyz", timeout=10).json()["checks"]
        assert ready["service:beat"].startswith("ok (1 restarts")
        bound = stats["reconciler"]["recovery_bound_s"]
        assert took < 5 * bound + 30, (took, bound)  # generous: the benchmark measures it
    finally:
        up.kill()


def test_the_whole_stack_killed_and_started_again_finishes_everything(
    tmp_path: Path, provider: FakeProvider
) -> None:
    provider.configure(delay_s=1.0)
    env = up_env(tmp_path, provider)
    first = Up(env, tmp_path / "up1.log")
    try:
        first.ready()
        ids = post(first.api, TEXTS)
        wait_for(lambda: provider.bill()["requests"], 30, "a request in flight")
        everything = first.everything()
    finally:
        first.kill()  # the supervisor; its watchdog ends the rest, Redis and its queues included
    wait_for(lambda: not any(alive(p) for p in everything), 30, "the old stack to end (its ports free)")
    provider.configure(delay_s=0.0)
    second = Up(env, tmp_path / "up2.log")
    try:
        second.ready()
        docs = wait_for(lambda: final(second.api, ids), 120, "every document final", interval=0.5)
        answered_once(docs)
        costs = httpx.get(f"{second.api}/v1/costs", timeout=10).json()
        bill = provider.bill()["requests"]
        assert costs["requests"]["answered"] + costs["unanswered_requests"]["requests"] >= len(bill)
    finally:
        second.kill()
