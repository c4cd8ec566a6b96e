"""Dependencies: the session, the settings and the queue, as Annotated aliases."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Path, Request
from sqlmodel import Session

from core.config import Settings

log = logging.getLogger("docsort.api")


def get_session(request: Request) -> Iterator[Session]:
    """A session per request, committed when the route returns."""
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_celery(request: Request) -> Celery:
    """The thin Celery client the API sends tasks by name with (core/messaging.py)."""
    celery: Celery = request.app.state.celery
    return celery


# Ids as path or query parameters: bounded to what the databases store (SQLite: signed 64-bit).
MAX_DB_INT = 2**63 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_DB_INT)]

SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
