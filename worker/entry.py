"""Entry point for the celery command: `celery -A worker.entry:app worker -E`."""

from core.config import Settings
from core.logs import setup_logging
from worker.app import create_celery

settings = Settings()
setup_logging(settings)
app = create_celery(settings)
