"""Costs and progress."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import CeleryDep, SessionDep, SettingsDep
from api.schemas import CostReport, TierCost
from core import messaging
from core.vocab import Status
from store import reports
from store.models import NANO, utcnow

router = APIRouter(prefix="/v1", tags=["reports"])


@router.get("/costs", response_model=CostReport)
def get_costs(session: SessionDep) -> CostReport:
    """Totals by tier and model, cost per 1,000 documents, and the saving against the last tier."""
    report = reports.cost_report(session=session)
    total = sum(t["cost_nanousd"] for t in report["by_tier"])
    baseline = report["baseline_nanousd"]
    documents = report["documents"]
    return CostReport(
        documents=documents,
        cost_usd=total / NANO,
        cost_per_1k_docs=(total / NANO) * 1000 / documents if documents else 0.0,
        cost_if_all_large_usd=baseline / NANO,
        saving_usd=(baseline - total) / NANO,
        saving_pct=100.0 * (baseline - total) / baseline if baseline else 0.0,
        by_tier=[
            TierCost(
                **{k: v for k, v in t.items() if k != "cost_nanousd"},
                cost_usd=t["cost_nanousd"] / NANO,
            )
            for t in report["by_tier"]
        ],
    )


class Throughput(BaseModel):
    """Documents finished per minute, averaged over recent windows."""

    last_1m: float
    last_5m: float
    last_15m: float


class Stats(BaseModel):
    """Progress: documents by status, queue depths, throughput, cost so far."""

    documents: dict[str, int]
    queues: dict[str, int | None]
    throughput_per_min: Throughput
    cost_usd: float


@router.get("/stats", response_model=Stats)
def get_stats(session: SessionDep, settings: SettingsDep, celery: CeleryDep) -> Stats:
    """Documents by status, queue depths, throughput over the last minutes, and cost so far."""
    now = utcnow()
    rates = {
        minutes: reports.finished_since(session=session, since=now - timedelta(minutes=minutes)) / minutes
        for minutes in (1, 5, 15)
    }
    return Stats(
        documents={status.value: 0 for status in Status} | reports.counts_by_status(session=session),
        queues=messaging.queue_depths(settings, messaging.queue_names(settings)),
        throughput_per_min=Throughput(last_1m=rates[1], last_5m=rates[5], last_15m=rates[15]),
        cost_usd=reports.total_cost(session=session) / NANO,
    )
