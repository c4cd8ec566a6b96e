"""What a running docsort knows of its own processes: the supervisor's status file, and heartbeats.

`docsort up` writes `data_dir/services.json` (each service's state, pid, restarts, last exit); the
periodic jobs write a heartbeat in Redis each time they run. The API shows both in /readyz and
/v1/stats, so a dead scheduler is seen, not guessed at.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STATUS_FILE = "services.json"
_HEARTBEAT = "docsort:heartbeat:"


def status_path(data_dir: Path) -> Path:
    """Where `docsort up` writes the state of its services."""
    return data_dir / STATUS_FILE


def read_services(data_dir: Path) -> dict[str, Any] | None:
    """The services of a live supervisor by name, or None (none runs here, or it died)."""
    try:
        data = json.loads(status_path(data_dir).read_text())
        os.kill(int(data.get("supervisor_pid", 0)), 0)
    except (OSError, ValueError, TypeError):
        return None  # no file, or one left by a supervisor that is gone
    services: dict[str, Any] = data.get("services", {})
    return services


def beat(redis_url: str, name: str) -> None:
    """Record that the periodic job name ran now."""
    import redis

    redis.Redis.from_url(redis_url, socket_timeout=2).set(f"{_HEARTBEAT}{name}", str(time.time()), ex=86_400)


def seconds_since(redis_url: str, name: str) -> float | None:
    """Seconds since the periodic job name last ran; None if never (in the last day) or unknown."""
    import redis

    try:
        value = redis.Redis.from_url(redis_url, socket_timeout=2).get(f"{_HEARTBEAT}{name}")
    except redis.RedisError:
        return None
    return None if value is None else max(0.0, time.time() - float(value))
