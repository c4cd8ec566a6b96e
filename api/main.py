"""create_app(settings): wires routers, error handlers and state; no import-time globals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from celery import Celery
from fastapi import Depends, FastAPI

from api import errors
from api import logging as request_logging
from api.auth import require_api_key
from api.console import routes as console_routes
from api.console import session as console_session
from api.limits import BodyLimit
from api.routes import documents, examples, health, imports, quality, reports
from api.routes import taxonomies as taxonomy_routes
from api.schemas import problem_responses
from classifiers.runners import check_kinds
from core import __version__, messaging
from core.config import Settings
from store import taxonomies
from store.db import make_engine, migrate, session_scope


def create_app(settings: Settings, celery: Celery | None = None) -> FastAPI:
    """The API for settings; the database is migrated and the default taxonomy stored at start."""
    check_kinds(settings)

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
    app.state.celery = celery or messaging.client(settings)
    with session_scope(app.state.engine) as session:
        taxonomies.put_taxonomy(session=session, spec=settings.default_taxonomy)
    errors.install(app)
    request_logging.install(app)
    app.add_middleware(BodyLimit, limit=settings.api.max_request_bytes)
    # Every route but /healthz, /readyz and the OpenAPI docs needs a key when require_auth is on.
    guard = [Depends(require_api_key)] if settings.api.require_auth else []
    common = problem_responses(*((401,) if guard else ()), 422, 503)
    for module in (documents, examples, imports, quality, reports, taxonomy_routes):
        app.include_router(module.router, dependencies=guard, responses=common)
    app.include_router(health.router)
    app.include_router(console_routes.router)  # its own sessions and CSRF (api/console/session.py)
    app.state.console_signer = console_session.make_signer(
        settings.api.session_secret.get_secret_value() if settings.api.session_secret else None
    )
    return app
