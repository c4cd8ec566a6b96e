"""Real worker processes for fault tests: started like `docsort up` starts them, killable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.config import Settings
from core.messaging import queue_names


def settings_env(settings: Settings) -> dict[str, str]:
    """settings as the DOCSORT_* environment a child process builds the same settings from."""
    tiers = []
    for tier in settings.models:
        data = tier.model_dump(mode="json")
        data["api_key"] = tier.api_key.get_secret_value()
        tiers.append(data)
    return {
        "DOCSORT_DATA_DIR": str(settings.data_dir),
        "DOCSORT_WEIGHTS_DIR": str(settings.weights_dir),
        "DOCSORT_DATABASE_URL": settings.db_url,
        "DOCSORT_REDIS_URL": settings.redis_url or "",
        "DOCSORT_MODELS": json.dumps(tiers),
        "DOCSORT_WORKER": settings.worker.model_dump_json(),
        "DOCSORT_SPEND": settings.spend.model_dump_json(),
    }


class WorkerProcess:
    """`celery worker -E -B` in its own process group, logging to a file."""

    def __init__(self, settings: Settings, log: Path, name: str = "w1") -> None:
        env = {**os.environ, **settings_env(settings)}
        env.pop("DOCSORT_API__REQUIRE_AUTH", None)
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.entry:app",
            "worker",
            "-E",
            "-B",
            "-s",
            str(settings.data_dir / f"beat-{name}"),
            "-Q",
            ",".join(queue_names(settings)),
            "-c",
            "1",
            "--pool",
            "solo",
            "-n",
            f"{name}@test",
            "--loglevel",
            "INFO",
        ]
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.process = subprocess.Popen(
            argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self) -> None:
        """SIGKILL the whole group: no shutdown, no acks."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """A warm shutdown, then SIGKILL if it hangs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
