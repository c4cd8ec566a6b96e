"""SQLite writers wait in a kernel queue (flock) instead of SQLite's busy handler.

SQLite lets one connection write at a time; the others retry on a timer that sleeps 1, 2, 5, 10, ...
up to 100 ms between tries, so a writer waits whole milliseconds for a lock held for a fraction of
one. With two worker processes and the API writing, those waits were a fifth of the workers' time
(a py-spy profile, docs/benchmarks.md). Each connection here takes an exclusive flock on `<db>.writers`
at its first write statement and drops it once its commit or rollback is done: the span SQLite holds
its own write lock (pysqlite begins a transaction at the first INSERT/UPDATE/DELETE and reads outside
one). The kernel wakes the next writer the moment the lock is dropped. SQLite's own lock and busy
timeout stay underneath, for writers that do not take part (the sqlite3 shell, migrations' DDL).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from typing import Any

from sqlalchemy import Engine, event

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_holding: set[int] = set()  # the threads of this process that hold the lock through a connection


class QueuedWriter(sqlite3.Connection):
    """A sqlite3 connection that holds the writers' flock from its first write to its commit or rollback."""

    lock_path: str | None = None  # set per database by connect_args (see factory)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600) if self.lock_path else None
        self._held: int | None = None  # the thread that took the lock

    def writing(self, statement: str) -> None:
        """Called before each statement: a write waits for the lock if this connection lacks it."""
        if (
            self._fd is None
            or self._held is not None
            or not statement.lstrip()[:7].upper().startswith(WRITES)
        ):
            return
        me = threading.get_ident()
        if me in _holding:
            # This thread writes on another connection already: waiting here would never end, where
            # SQLite's busy timeout ends in an error after 30 s. Leave that case to SQLite, as before.
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._held = me
        _holding.add(me)

    def _release(self) -> None:
        if self._held is not None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            _holding.discard(self._held)
            self._held = None

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def factory(database: str) -> type[QueuedWriter]:
    """The connection class for one database file (sqlite3.connect's factory argument)."""
    return type("QueuedWriter", (QueuedWriter,), {"lock_path": f"{database}.writers"})


def install(engine: Engine) -> None:
    """Make engine's statements tell their connection when they write."""

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        dbapi = conn.connection.dbapi_connection
        if isinstance(dbapi, QueuedWriter):
            dbapi.writing(statement)
