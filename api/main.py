"""create_app(settings): wires routers, error handlers and state; no import-time globals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from celery import Celery
from fastapi import FastAPI

from api import errors
from api.routes import documents, health, reports, taxonomies
from docsort import __version__
from docsort.config import Settings
from store import crud
from store.db import make_engine, migrate, session_scope


def create_app(settings: Settings, celery: Celery | None = None) -> FastAPI:
    """The API for settings; the database is migrated and the default taxonomy stored at start."""
    from worker.app import create_celery

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.engine.dispose()

    app = FastAPI(
        title="docsort",
        version=__version__,
        summary="Document classification by a cascade of models, cheapest first.",
        lifespan=lifespan,
    )
    migrate(settings.db_url)
    app.state.settings = settings
    app.state.engine = make_engine(settings.db_url)
    app.state.celery = celery or create_celery(settings)
    with session_scope(app.state.engine) as session:
        crud.put_taxonomy(session=session, spec=settings.default_taxonomy)
    errors.install(app)
    for module in (documents, reports, taxonomies, health):
        app.include_router(module.router)
    return app
