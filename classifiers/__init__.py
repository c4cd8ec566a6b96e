"""The cascade engine: plain functions and small classes, no Celery or HTTP framework inside."""
