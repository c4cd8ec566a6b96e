"""Real processes for fault tests: workers and beat started as `docsort up` starts them, the fake
provider, and `docsort up` itself; each killable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from core.config import Settings
from core.messaging import queue_names

ROOT = Path(__file__).resolve().parent.parent


def settings_env(settings: Settings) -> dict[str, str]:
    """settings as the DOCSORT_* environment a child process builds the same settings from."""
    tiers = []
    for tier in settings.models:
        data = tier.model_dump(mode="json")
        data["api_key"] = tier.api_key.get_secret_value()
        tiers.append(data)
    key = settings.prompt_tag_key
    return {
        **({"DOCSORT_PROMPT_TAG_KEY": key.get_secret_value()} if key else {}),
        "DOCSORT_DATA_DIR": str(settings.data_dir),
        "DOCSORT_WEIGHTS_DIR": str(settings.weights_dir),
        "DOCSORT_DATABASE_URL": settings.db_url,
        "DOCSORT_REDIS_URL": settings.redis_url or "",
        "DOCSORT_MODELS": json.dumps(tiers),
        "DOCSORT_WORKER": settings.worker.model_dump_json(),
        "DOCSORT_SPEND": settings.spend.model_dump_json(),
        "DOCSORT_API": settings.api.model_dump_json(),
        "DOCSORT_FLOWER": json.dumps(
            {
                **settings.flower.model_dump(mode="json"),
                "password": settings.flower.password.get_secret_value(),
            }
        ),
    }


class Process:
    """A child in its own process group, logging to a file; killable as a whole."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

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


class WorkerProcess(Process):
    """`celery worker -E` on every docsort queue (solo pool, or prefork with `pool`)."""

    def __init__(self, settings: Settings, log: Path, name: str = "w1", pool: str = "solo") -> None:
        env = settings_env(settings)
        argv = [sys.executable, "-m", "celery", "-A", "worker.entry:app", "worker", "-E"]
        argv += ["-Q", ",".join(queue_names(settings)), "-c", "1", "--pool", pool]
        argv += ["-n", f"{name}@test", "--loglevel", "INFO"]
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(argv, env, log)


class BeatProcess(Process):
    """`celery beat`: the one scheduler of the periodic jobs."""

    def __init__(self, settings: Settings, log: Path, name: str = "beat") -> None:
        schedule = str(settings.data_dir / f"{name}-schedule")
        argv = [sys.executable, "-m", "celery", "-A", "worker.entry:app", "beat", "-s", schedule]
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(argv, settings_env(settings), log)


class FakeProvider(Process):
    """tests/fake_provider.py as its own process (it outlives a killed worker), with its bill."""

    def __init__(self, port: int, log: Path, prices: dict[str, tuple[float, float]]) -> None:
        argv = [sys.executable, "-m", "tests.fake_provider", "--port", str(port)]
        for model, (price_in, price_out) in prices.items():
            argv += ["--price", f"{model}={price_in},{price_out}"]
        super().__init__(argv, {"PYTHONPATH": str(ROOT)}, log)
        self.url = f"http://127.0.0.1:{port}"
        wait_for(self._up, 20, "the fake provider")

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v1/models", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def faults(self, *faults: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/_faults", json={"faults": list(faults)}, timeout=5).raise_for_status()

    def configure(self, **values: Any) -> None:
        httpx.post(f"{self.url}/_config", json=values, timeout=5).raise_for_status()

    def bill(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/_bill", timeout=5).json()
        return data


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
