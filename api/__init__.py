"""The HTTP API: FastAPI, built by create_app(settings)."""
