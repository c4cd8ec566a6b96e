"""Costs and progress."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep
from api.schemas import CostReport, TierCost
from store import crud
from store.models import NANO

router = APIRouter(prefix="/v1", tags=["reports"])


@router.get("/costs", response_model=CostReport)
def get_costs(session: SessionDep) -> CostReport:
    """Totals by tier and model, cost per 1,000 documents, and the saving against the last tier."""
    report = crud.cost_report(session=session)
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
