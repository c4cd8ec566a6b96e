"""Live quality: per tier, documents answered, audits, agreement with its auditor and what its target
implies, the cascade's estimated accuracy, and the drift guard's changes (GET /v1/quality, `docsort
quality`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from classifiers.trust import implied_agreement
from core.config import Settings
from core.vocab import Status
from store import audits, local_models, taxonomies
from store.models import Document, TrustChange


def auditor_of(settings: Settings) -> str:
    """Who audits: the last tier, or review (a person)."""
    return "review" if settings.audit.to == "review" else settings.models[-1].name


def auditor_accuracy(settings: Settings) -> tuple[float, str]:
    """The auditor's accuracy, and where that figure comes from."""
    if settings.audit.to == "review":
        return 1.0, "a person"
    target = settings.target_for(settings.models[-1].name)
    return target, f"assumed: the last tier's target accuracy ({target:.2f})"


def implied(settings: Settings, tier: str, labels: int) -> float:
    """The agreement with the auditor that a tier at its target implies."""
    accuracy, _ = auditor_accuracy(settings)
    return implied_agreement(settings.target_for(tier), accuracy, labels)


def change_public(change: TrustChange) -> dict[str, Any]:
    """A trust change as reports show it."""
    return {
        "id": change.id,
        "tier": change.tier,
        "action": change.action,
        "threshold": change.threshold,
        "local_model_id": change.local_model_id,
        "reason": change.reason,
        "evidence": change.evidence,
        "created_at": change.created_at,
        "undone_at": change.undone_at,
        "undone_by": change.undone_by,
        "in_force": change.undone_at is None,
    }


def status_counts(
    *, session: Session, taxonomy: str, since: datetime | None = None
) -> dict[str, dict[str, int]]:
    """Documents by status, and within each by the tier that answered ("-" for none): one indexed scan
    (ix_document_taxonomy_status_tier), shared by the quality report and the dashboard."""
    query = select(Document.status, Document.answered_by, func.count()).where(
        col(Document.taxonomy) == taxonomy
    )
    if since is not None:
        query = query.where(col(Document.updated_at) >= since)
    out: dict[str, dict[str, int]] = {}
    for status, by, n in session.exec(query.group_by(col(Document.status), col(Document.answered_by))):
        out.setdefault(str(status), {})[by or "-"] = int(n)
    return out


def report(
    *,
    session: Session,
    settings: Settings,
    taxonomy: str,
    since: datetime | None = None,
    counts: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """The quality report of a taxonomy (NotFound if it does not exist); counts: status_counts, if at hand."""
    tax = taxonomies.to_runtime(taxonomies.require(session=session, name=taxonomy))
    labels = len(tax.label_names)
    if counts is None:
        counts = status_counts(session=session, taxonomy=taxonomy, since=since)
    answered = {by: n for by, n in counts.get(Status.done.value, {}).items() if by != "-"}
    review = sum(counts.get(Status.needs_review.value, {}).values())
    total = sum(answered.values()) + review
    auditor = auditor_of(settings)
    accuracy, accuracy_source = auditor_accuracy(settings)
    in_force = {c.tier: c for c in audits.in_force(session=session, taxonomy=taxonomy)}
    rows = []
    estimate = 0.0
    for tier in settings.models:
        n = answered.get(tier.name, 0)
        row: dict[str, Any] = {"tier": tier.name, "answered": n, "share": n / total if total else 0.0}
        row["target"] = settings.target_for(tier.name)
        if tier.name == auditor:
            row.update(
                audits=None, agreement=None, interval_90=None, implied_agreement=None, note="the auditor"
            )
            estimate += n * accuracy
        else:
            agreement = audits.agreement_counts(
                session=session, taxonomy=taxonomy, tier=tier.name, since=since
            )
            level = implied(settings, tier.name, labels)
            row.update(
                audits=agreement.audits,
                agreed=agreement.agreed,
                agreement=agreement.rate,
                interval_90=list(agreement.interval) if agreement.audits else None,
                implied_agreement=level,
                below_target=agreement.confidently_below(level, settings.audit.min_support),
            )
            estimate += n * (agreement.rate if agreement.rate is not None else accuracy)
        change = in_force.get(tier.name)
        row["trust"] = change.action if change else "trusted"
        if tier.kind == "local":
            active = local_models.active_model(session=session, taxonomy=tax)
            row["local_model"] = active.version if active else None
        rows.append(row)
    machine = sum(answered.get(tier.name, 0) for tier in settings.models)
    note = (
        "agreement is measured against a person: it is accuracy"
        if auditor == "review"
        else f"agreement is measured against the last tier ({auditor}), a model: it is not accuracy. "
        f"The estimate counts the last tier at {accuracy_source}"
    )
    return {
        "taxonomy": taxonomy,
        "since": since,
        "auditor": auditor,
        "audit_rate": settings.audit.rate,
        "documents": total,
        "needs_review": review,
        "tiers": rows,
        # Over the documents the machine labelled (those a person labelled or left for review are not in it).
        "estimated_accuracy": estimate / machine if machine else None,
        "note": note,
        "changes": [change_public(c) for c in audits.history(session=session, taxonomy=taxonomy)],
    }
