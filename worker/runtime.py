"""Per-process state of a worker: the engine, taxonomy versions and tier runners, cached by version."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import httpx2  # the HTTP library of the openai client (a fork of httpx), the seam for injected faults
from celery import Celery, Task
from sqlalchemy import Engine

from classifiers import embeddings
from classifiers.decision import Runner
from classifiers.runners import build_runner, spec_for
from classifiers.taxonomy import Taxonomy
from core.config import Settings
from store import audits, calibrations, local_models, taxonomies
from store.db import make_engine, session_scope
from store.models import Calibration, TrustChange
from worker import training
from worker.ratelimit import limited

T = TypeVar("T")
CALIBRATION_TTL_S = 10.0  # a new calibration or trust change reaches every worker within this


@dataclass
class Runtime:
    """What tasks need, built lazily in each worker process (engines do not survive fork)."""

    settings: Settings
    http_client: httpx2.Client | None = None
    _engine: Engine | None = None
    _pid: int = 0
    _runners: dict[tuple[str, int, str, int], Runner] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _calibrations: dict[tuple[str, str], tuple[float, Calibration | None, TrustChange | None]] = field(
        default_factory=dict
    )
    _taxonomies: dict[tuple[str, int], Taxonomy] = field(default_factory=dict)
    _cache: dict[Hashable, tuple[float, Any]] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        """This process's engine."""
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                self._engine = make_engine(self.settings.db_url, **self._engine_options())
                self._pid = os.getpid()
                self._runners.clear()
            return self._engine

    def _engine_options(self) -> dict[str, Any]:
        """The worker's own connection settings (WorkerSettings.synchronous_commit)."""
        if self.settings.worker.synchronous_commit or not self.settings.db_url.startswith("postgresql"):
            return {}
        return {"connect_args": {"options": "-c synchronous_commit=off"}}

    def taxonomy(self, name: str, version: int) -> Taxonomy:
        """A taxonomy version, read once per process (a stored version never changes)."""
        key = (name, version)
        if key not in self._taxonomies:
            with session_scope(self.engine) as session:
                row = taxonomies.require(session=session, name=name, version=version)
                self._taxonomies[key] = taxonomies.to_runtime(row)
        return self._taxonomies[key]

    def _calibration(self, taxonomy: str, tier: str) -> tuple[Calibration | None, TrustChange | None]:
        """The newest calibration and the drift guard's change in force, looked up every few seconds."""
        key = (taxonomy, tier)
        now = time.monotonic()
        cached = self._calibrations.get(key)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        with session_scope(self.engine) as session:
            calibration = calibrations.latest_calibration(session=session, taxonomy=taxonomy, tier=tier)
            change = next(
                (c for c in audits.in_force(session=session, taxonomy=taxonomy) if c.tier == tier), None
            )
        self._calibrations[key] = (now + CALIBRATION_TTL_S, calibration, change)
        return calibration, change

    def runner(self, taxonomy: Taxonomy, tier_name: str) -> Runner:
        """The runner of a tier for a taxonomy version: its active local model or its calibration."""
        extra: dict[str, Any]
        if self.settings.tier(tier_name).kind == "local":
            with session_scope(self.engine) as session:
                row = local_models.active_model(session=session, taxonomy=taxonomy)
            version = (row.id or 0) if row else 0
            extra = {}
        else:
            calibration, change = self._calibration(taxonomy.name, tier_name)
            version = ((calibration.id or 0) if calibration else 0) * 1_000_003 + (
                (change.id or 0) if change else 0
            )
            extra = {"http_client": self.http_client, "wrap": self._limits}
            threshold = calibration.threshold if calibration else self.settings.tier(tier_name).threshold
            if calibration is not None:
                extra["calibration"] = calibration.params
            if change is not None and change.threshold is not None:  # the drift guard's, until undone
                threshold = max(threshold, change.threshold)
            extra["threshold"] = threshold
        key = (taxonomy.name, taxonomy.version, tier_name, version)
        with self._lock:
            if key not in self._runners:
                for stale in [k for k in self._runners if k[:3] == key[:3]]:
                    del self._runners[stale]  # a replaced model version or calibration
                if self.settings.tier(tier_name).kind == "local":
                    local, concurrency = self.settings.local, self.settings.worker.concurrency
                    embeddings.configure(threads=local.threads_per_process(concurrency))
                    model, name = training.load(self.settings, row)
                    extra = {"local_model": model, "local_model_name": name}
                self._runners[key] = build_runner(spec_for(self.settings, tier_name, taxonomy, **extra))
            return self._runners[key]

    def cached(self, key: Hashable, ttl_s: float, compute: Callable[[], T]) -> T:
        """compute(), remembered in this process for ttl_s (per-batch reads that change rarely)."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            value: T = hit[1]
            return value
        value = compute()
        self._cache[key] = (now + ttl_s, value)
        return value

    def _limits(self, model: Any) -> Any:
        return limited(model, self.settings.redis_url)


class DocsortCelery(Celery):
    """The workers' Celery app: the tasks reach the process runtime through it, never a global."""

    runtime: Runtime


def runtime_of(task: Task[Any, Any]) -> Runtime:
    """The runtime of the app a task is bound to."""
    return cast(DocsortCelery, task.app).runtime
