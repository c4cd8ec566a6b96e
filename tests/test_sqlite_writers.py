"""SQLite writers queue on a flock (store/sqlite_writers.py): real SQLite files, threads and processes."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, text

from store import sqlite_writers
from store.db import make_engine


def _engine(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
    return engine


def _free(lock: Path) -> bool:
    """Whether nobody holds the writers' lock (tried without waiting)."""
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the lock if we took it
    return True


def test_a_second_writer_waits_for_the_first_to_commit_or_roll_back(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "db.sqlite")
    assert (tmp_path / "db.sqlite.writers").exists()
    order: list[str] = []
    for end in ("commit", "rollback"):
        first = engine.connect()
        first.execute(text("INSERT INTO t VALUES (1)"))  # holds the lock until its transaction ends
        assert isinstance(first.connection.dbapi_connection, sqlite_writers.QueuedWriter)
        waiting = threading.Event()

        def second(waiting: threading.Event = waiting, end: str = end) -> None:
            with engine.begin() as conn:
                waiting.set()
                conn.execute(text("INSERT INTO t VALUES (2)"))
                order.append(f"second after {end}")

        worker = threading.Thread(target=second)
        worker.start()
        assert waiting.wait(10)
        worker.join(0.5)
        assert worker.is_alive()  # queued behind the first writer, not failed
        assert not _free(tmp_path / "db.sqlite.writers")  # in the kernel's queue, not SQLite's timer
        order.append(end)
        getattr(first, end)()
        worker.join(10)
        assert not worker.is_alive()
        assert _free(tmp_path / "db.sqlite.writers")  # the second let go at its commit too
        first.close()
    assert order == ["commit", "second after commit", "rollback", "second after rollback"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t ORDER BY rowid")).scalars().all() == [1, 2, 2]
    engine.dispose()


def test_a_thread_writing_on_two_connections_gets_sqlite_s_error_not_a_hang(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "db.sqlite")
    with engine.connect() as first, engine.connect() as second:
        second.exec_driver_sql("PRAGMA busy_timeout=200")  # SQLite's wait, short for the test
        first.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(sqlalchemy.exc.OperationalError, match="locked"):
            second.execute(text("INSERT INTO t VALUES (2)"))  # as before the queue: busy timeout
        first.commit()
    engine.dispose()


def _count_up(path: str, times: int) -> None:
    engine = make_engine(f"sqlite:///{path}")
    for _ in range(times):
        with engine.begin() as conn:
            n = conn.execute(text("SELECT COALESCE(MAX(n), 0) FROM t")).scalar_one()
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n + 1})
    engine.dispose()


def test_processes_writing_at_once_all_get_through(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    _engine(path).dispose()
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_count_up, args=(str(path), 200)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM t")).scalar_one() == 600
    engine.dispose()
