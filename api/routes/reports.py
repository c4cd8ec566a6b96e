"""Costs and progress."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import CeleryDep, SessionDep, SettingsDep
from api.routes.quality import QualityReport
from api.schemas import AuditCost, BatchSpend, CostReport, Requests, Spend, TierCost, Unanswered
from core import health, messaging
from core.config import Settings
from core.vocab import RequestState, Status
from store import quality, reports, requests, spend
from store.models import NANO, utcnow

router = APIRouter(prefix="/v1", tags=["reports"])


def _batch_spend(session: SessionDep, settings: Settings) -> BatchSpend:
    names = {t.name: t for t in settings.models}
    batched = reports.batched_cost(session=session)
    cost = sum(c for _, c in batched.values())
    sync = sum(
        c / names[tier].price.batch_discount if tier in names and names[tier].price.batch_discount else c
        for tier, (_, c) in batched.items()
    )
    return BatchSpend(
        attempts=sum(n for n, _ in batched.values()),
        cost_usd=cost / NANO,
        at_sync_prices_usd=sync / NANO,
        saving_usd=(sync - cost) / NANO,
    )


def _spend(session: SessionDep, settings: Settings) -> Spend:
    day = spend.today()
    rows = spend.state(session=session, day=day)
    start = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    books = requests.report(session=session, since=start)
    spent = sum(books[s]["cost_nanousd"] for s in (RequestState.answered, RequestState.unanswered))
    caps = settings.spend.per_taxonomy_daily_cap_usd
    return Spend(
        day=day.isoformat(),
        spent_usd=spent / NANO,
        reserved_usd=rows.get(spend.ALL, {}).get("reserved_nanousd", 0) / NANO,
        daily_cap_usd=settings.spend.daily_cap_usd,
        per_taxonomy={
            name: {
                "spent_usd": rows.get(name, {}).get("spent_nanousd", 0) / NANO,
                "reserved_usd": rows.get(name, {}).get("reserved_nanousd", 0) / NANO,
                "cap_usd": cap,
            }
            for name, cap in caps.items()
        },
    )


@router.get("/costs", response_model=CostReport)
def get_costs(session: SessionDep, settings: SettingsDep) -> CostReport:
    """Totals by tier and model, cost per 1,000 documents, the saving against the last tier, the
    requests that brought no answer (estimated), and today's spend against the caps."""
    report = reports.cost_report(session=session)
    books = requests.report(session=session)
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
        requests=Requests(
            answered=books[RequestState.answered]["requests"],
            failed=books[RequestState.failed]["requests"],
            in_flight=books[RequestState.sent]["requests"],
        ),
        unanswered_requests=Unanswered(
            requests=books[RequestState.unanswered]["requests"],
            cost_usd=books[RequestState.unanswered]["cost_nanousd"] / NANO,
        ),
        spend=_spend(session, settings),
        batch_api=_batch_spend(session, settings),
        audits=AuditCost(
            attempts=sum(t["attempts"] for t in report["audits"]),
            documents=sum(t["documents"] for t in report["audits"]),
            cost_usd=sum(t["cost_nanousd"] for t in report["audits"]) / NANO,
            by_tier=[
                TierCost(
                    **{k: v for k, v in t.items() if k != "cost_nanousd"}, cost_usd=t["cost_nanousd"] / NANO
                )
                for t in report["audits"]
            ],
        ),
    )


class Throughput(BaseModel):
    """Documents finished per minute, averaged over recent windows."""

    last_1m: float
    last_5m: float
    last_15m: float


class TierRate(BaseModel):
    """One tier's pace over the recent window, from its recorded attempts."""

    documents: int = Field(description="Documents it classified in the window (audits not counted)")
    requests: int = Field(description="Model requests (the local tier: batches) they took")
    docs_per_s: float = Field(description="documents / window: the pace it kept")
    busy_docs_per_s: float | None = Field(
        None,
        description="documents / the summed latency of its requests: its pace while working, per worker "
        "process; the tier with the lowest, for its share of the documents, bounds the pipeline",
    )


class TierThroughput(BaseModel):
    """Per tier, documents per second over the last window_s seconds."""

    window_s: int
    tiers: dict[str, TierRate]


class Reconciler(BaseModel):
    """The periodic job that recovers documents and requests a crash left behind."""

    last_run_s_ago: float | None = Field(description="None: not seen in the last day")
    every_s: float
    late: bool = Field(description="It has not run for three of its periods: its scheduler is down")
    recovery_bound_s: float = Field(description="A crashed task's documents are handed out again within this")


class Stats(BaseModel):
    """Progress: documents by status, queue depths, throughput, cost so far; the processes' health."""

    documents: dict[str, int]
    queues: dict[str, int | None]
    throughput_per_min: Throughput
    tier_throughput: TierThroughput
    cost_usd: float
    reconciler: Reconciler
    services: dict[str, dict[str, Any]] | None = Field(
        None, description="Under `docsort up`: each service's state, pid, restarts and last exit code"
    )
    quality: QualityReport = Field(description="GET /v1/quality for the default taxonomy")


def reconciler_state(settings: Settings) -> Reconciler:
    """When the reconciler last ran, and whether that is too long ago."""
    every = settings.worker.reconcile_every_s
    ago = health.seconds_since(settings.redis_url, "reconcile") if settings.redis_url else None
    return Reconciler(
        last_run_s_ago=ago,
        every_s=every,
        late=ago is not None and ago > 3 * every + 30,
        recovery_bound_s=settings.recovery_bound_s,
    )


TIER_WINDOW_S = 60  # long enough to span several batches of every tier, short enough to show a change


def tier_throughput(session: SessionDep, now: datetime) -> TierThroughput:
    """Each tier's pace over the window before now, from its recorded attempts."""
    window = TIER_WINDOW_S
    rows = reports.tier_throughput(session=session, since=now - timedelta(seconds=window))
    return TierThroughput(
        window_s=window,
        tiers={
            tier: TierRate(
                documents=int(row["documents"]),
                requests=int(row["requests"]),
                docs_per_s=row["documents"] / window,
                busy_docs_per_s=row["documents"] / row["busy_s"] if row["busy_s"] > 0 else None,
            )
            for tier, row in rows.items()
        },
    )


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
        tier_throughput=tier_throughput(session, now),
        cost_usd=reports.total_cost(session=session) / NANO,
        reconciler=reconciler_state(settings),
        services=health.read_services(settings.data_dir),
        quality=QualityReport.model_validate(
            quality.report(session=session, settings=settings, taxonomy=settings.default_taxonomy.name)
        ),
    )
