"""Entry point for uvicorn: `uvicorn --factory api.entry:app`."""

from fastapi import FastAPI

from api.main import create_app
from core.config import Settings
from core.logs import setup_logging


def app() -> FastAPI:
    """Build settings from the environment, then the app."""
    settings = Settings()
    setup_logging(settings)
    return create_app(settings)
