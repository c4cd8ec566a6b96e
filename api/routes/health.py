"""Liveness and readiness."""

from __future__ import annotations

import os
from typing import Literal

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from core import health

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str | int]:
    """The process is up (and which one it is: `docsort up` checks that the port answers from its own)."""
    return {"status": "ok", "pid": os.getpid()}


class Readiness(BaseModel):
    """Whether every dependency answers, and each one's state."""

    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(
        description="database, redis, model:<tier>: ok | down: <error>; reconciler: ok | late | not seen "
        "yet; service:<name> (under `docsort up`): up | restarting"
    )


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency does not answer"}},
)
def readyz(request: Request) -> JSONResponse:
    """The database, Redis and each model endpoint answer."""
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"down: {type(exc).__name__}"
    try:
        with state.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"down: {type(exc).__name__}"
    for tier in state.settings.models:
        if tier.kind == "local":
            continue  # runs inside the worker: no endpoint to ask
        try:
            response = httpx.get(
                tier.base_url.rstrip("/") + "/models",
                headers={"Authorization": f"Bearer {tier.api_key.get_secret_value()}"},
                timeout=3,
            )
            checks[f"model:{tier.name}"] = (
                "ok" if response.status_code < 500 else f"HTTP {response.status_code}"
            )
        except httpx.HTTPError as exc:
            checks[f"model:{tier.name}"] = f"down: {type(exc).__name__}"
    settings = state.settings
    ago = health.seconds_since(settings.redis_url, "reconcile") if settings.redis_url else None
    every = settings.worker.reconcile_every_s
    if ago is None:
        checks["reconciler"] = "not seen yet"  # starting up; a stack that never runs it shows as late
    else:
        checks["reconciler"] = "ok" if ago <= 3 * every + 30 else f"late: last ran {ago:.0f}s ago"
    for name, service in (health.read_services(settings.data_dir) or {}).items():
        restarts = (
            f" ({service['restarts']} restarts, last exit {service['last_exit']})"
            if service["restarts"]
            else ""
        )
        checks[f"service:{name}"] = ("ok" if service["state"] == "up" else service["state"]) + restarts
    ready = all(value.startswith("ok") or value == "not seen yet" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
