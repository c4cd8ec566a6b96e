"""Per-process state of a worker: the engine, and tier runners cached by taxonomy version."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import httpx2 as httpx  # the HTTP library of the openai client (a fork of httpx)
from sqlalchemy import Engine

from classifiers.calibration import Calibrator
from classifiers.cascade import TierRunner
from classifiers.local_runner import Runner
from classifiers.providers import get_model
from classifiers.taxonomy import Taxonomy
from classifiers.tokens import get_tokenizer
from docsort.config import Settings
from store import crud, learning
from store.db import make_engine, session_scope
from store.models import Calibration
from worker.ratelimit import limited


@dataclass
class Runtime:
    """What tasks need, built lazily in each worker process (engines do not survive fork)."""

    settings: Settings
    http_client: httpx.Client | None = None
    _engine: Engine | None = None
    _pid: int = 0
    _runners: dict[tuple[str, int, str, int], Runner] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _calibrations: dict[tuple[str, str], tuple[float, Calibration | None]] = field(default_factory=dict)
    _taxonomies: dict[tuple[str, int], Taxonomy] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        """This process's engine."""
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                self._engine = make_engine(self.settings.db_url)
                self._pid = os.getpid()
                self._runners.clear()
            return self._engine

    def taxonomy(self, name: str, version: int) -> Taxonomy:
        """A taxonomy version, read once per process (a stored version never changes)."""
        key = (name, version)
        if key not in self._taxonomies:
            with session_scope(self.engine) as session:
                row = crud.get_taxonomy(session=session, name=name, version=version)
                if row is None:
                    raise LookupError(f"taxonomy {name} v{version} is not stored")
                self._taxonomies[key] = crud.to_runtime(row)
        return self._taxonomies[key]

    def local_runner(self, taxonomy: Taxonomy, tier_name: str) -> Runner:
        """The local tier's runner with the taxonomy's active model (none until one is trained)."""
        from worker.learning import build_local_runner

        with session_scope(self.engine) as session:
            row = learning.active_model(session=session, taxonomy=taxonomy)
        key = (taxonomy.name, taxonomy.version, tier_name, (row.id or 0) if row else 0)
        with self._lock:
            if key not in self._runners:
                for stale in [k for k in self._runners if k[:3] == key[:3]]:
                    del self._runners[stale]  # a replaced model version
                self._runners[key] = build_local_runner(self.settings, taxonomy, tier_name, row)
            return self._runners[key]

    def _calibration(self, taxonomy: str, tier: str) -> Calibration | None:
        """The newest calibration, looked up at most every few seconds (it changes rarely)."""
        key = (taxonomy, tier)
        now = time.monotonic()
        cached = self._calibrations.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        with session_scope(self.engine) as session:
            calibration = crud.latest_calibration(session=session, taxonomy=taxonomy, tier=tier)
        self._calibrations[key] = (now + 10.0, calibration)
        return calibration

    def runner(self, taxonomy: Taxonomy, tier_name: str) -> Runner:
        """A runner for a taxonomy version and tier, with its current calibration."""
        if self.settings.tier(tier_name).kind == "local":
            return self.local_runner(taxonomy, tier_name)
        calibration = self._calibration(taxonomy.name, tier_name)
        cal_id = calibration.id if calibration and calibration.id else 0
        key = (taxonomy.name, taxonomy.version, tier_name, cal_id)
        with self._lock:
            if key not in self._runners:
                tier = self.settings.tier(tier_name)
                if calibration is not None:
                    tier = tier.model_copy(update={"threshold": calibration.threshold})
                calibrate = Calibrator.from_params(calibration.params) if calibration else None
                self._runners[key] = TierRunner(
                    taxonomy=taxonomy,
                    model=limited(get_model(tier, self.http_client), self.settings.redis_url),
                    tokenizer=get_tokenizer(
                        tier.tokenizer,
                        str(self.settings.weights_path(tier.weights)) if tier.weights else None,
                    ),
                    calibrate=calibrate,
                    is_last=self.settings.next_tier(tier_name) is None,
                    reference_price=self.settings.models[-1].price,
                )
            return self._runners[key]
