"""Engine creation, schema migrations and sessions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, create_engine

from store import sqlite_writers

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for url; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1] if "///" in url else ""  # "sqlite://": in memory
        on_disk = bool(path) and path != ":memory:"
        if on_disk:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connect_args: dict[str, Any] = {
            "check_same_thread": False,
            "timeout": 30,
            **kwargs.pop("connect_args", {}),
        }
        if on_disk and not path.startswith("file:"):
            connect_args["factory"] = sqlite_writers.factory(path)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        sqlite_writers.install(engine)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # No pre-ping: it is a round trip before every transaction (18% of the worker's database time in
    # a profile, docs/benchmarks.md). A connection that died with the server fails its statement once
    # instead (OperationalError: the task is retried, the API answers 503) and SQLAlchemy then drops
    # every pooled connection made before it.
    return create_engine(url, pool_size=10, max_overflow=20, **kwargs)


def alembic_config(url: str) -> Config:
    """Alembic configuration built in code, so no alembic.ini is needed at run time."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the schema at url to the newest migration."""
    if url.startswith("sqlite"):
        make_engine(url).dispose()  # creates the folder
    command.upgrade(alembic_config(url), "head")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def insert_or_skip(
    session: Session, table: Any, *, unique: Sequence[str] | None = None
) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into table that skips rows conflicting with a unique index (`unique`: its columns;
    None: any), in the session's dialect: both databases spell it ON CONFLICT DO NOTHING."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing(index_elements=unique)
