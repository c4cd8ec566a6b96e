"""Per-process state of a worker: the engine, and tier runners cached by taxonomy version."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import httpx
from sqlalchemy import Engine

from classifiers.calibration import Calibrator
from classifiers.cascade import TierRunner
from classifiers.providers import get_model
from classifiers.taxonomy import Taxonomy
from classifiers.tokens import get_tokenizer
from docsort.config import Settings
from store import crud
from store.db import make_engine, session_scope


@dataclass
class Runtime:
    """What tasks need, built lazily in each worker process (engines do not survive fork)."""

    settings: Settings
    http_client: httpx.Client | None = None
    _engine: Engine | None = None
    _pid: int = 0
    _runners: dict[tuple[str, int, str, int], TierRunner] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def engine(self) -> Engine:
        """This process's engine."""
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                self._engine = make_engine(self.settings.db_url)
                self._pid = os.getpid()
                self._runners.clear()
            return self._engine

    def runner(self, taxonomy: Taxonomy, tier_name: str) -> TierRunner:
        """A runner for a taxonomy version and tier, with its current calibration."""
        with session_scope(self.engine) as session:
            calibration = crud.latest_calibration(session=session, taxonomy=taxonomy.name, tier=tier_name)
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
                    model=get_model(tier, self.http_client),
                    tokenizer=get_tokenizer(
                        tier.tokenizer,
                        str(self.settings.weights_path(tier.weights)) if tier.weights else None,
                    ),
                    calibrate=calibrate,
                    is_last=self.settings.next_tier(tier_name) is None,
                    reference_price=self.settings.models[-1].price,
                )
            return self._runners[key]
