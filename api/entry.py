"""Entry point for uvicorn: `uvicorn --factory api.entry:app`."""

from fastapi import FastAPI

from api.main import create_app
from docsort.config import Settings
from docsort.logs import setup_logging


def app() -> FastAPI:
    """Build settings from the environment, then the app."""
    settings = Settings()
    setup_logging(settings)
    return create_app(settings)
