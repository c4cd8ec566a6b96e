"""The state machine in store/lifecycle.py: guarded claims and records, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from classifiers.costs import Usage
from classifiers.decision import AttemptRecord, Decision
from core.config import default_taxonomy
from core.vocab import Outcome, Status
from store import documents, lifecycle, reports, taxonomies
from store.db import make_engine, migrate, session_scope
from store.models import DocumentCreate


def attempt(doc_id: int, label: str | None, outcome: Outcome, cost: int = 1000) -> AttemptRecord:
    return AttemptRecord(
        doc_id=doc_id,
        tier="small",
        model="m",
        request_id="r1",
        usage=Usage(input_tokens=10, output_tokens=2),
        cost_nanousd=cost,
        reference_nanousd=cost * 10,
        latency_ms=5,
        outcome=outcome,
        label=label,
        confidence=0.9,
    )


def test_claim_record_once_and_escalate(database_url: str) -> None:
    migrate(database_url)
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        tax = taxonomies.put_taxonomy(session=session, spec=default_taxonomy())
        docs = documents.create_documents(
            session=session,
            items=[DocumentCreate(text=f"doc {i}") for i in range(3)],
            taxonomy=tax,
            first_tier="small",
        )
        ids = [d.id for d, _ in docs]
    with session_scope(engine) as session:
        claimed = lifecycle.claim(session=session, ids=ids, tier="small", token="t1")
        assert [d.id for d in claimed] == ids
        assert lifecycle.claim(session=session, ids=ids, tier="small", token="t2") == []  # taken
    decisions = [
        Decision(
            doc_id=ids[0],
            outcome=Outcome.accepted,
            label="World",
            confidence=0.9,
            attempts=[attempt(ids[0], "World", Outcome.accepted)],
        ),
        Decision(
            doc_id=ids[1],
            outcome=Outcome.escalated,
            label="Sports",
            confidence=0.2,
            attempts=[attempt(ids[1], "Sports", Outcome.escalated)],
        ),
        Decision(doc_id=ids[2], outcome=Outcome.escalated, attempts=[attempt(ids[2], None, Outcome.invalid)]),
    ]
    with session_scope(engine) as session:
        moved = lifecycle.record(
            session=session, decisions=decisions, tier="small", token="t1", next_tier="large"
        )
    assert moved[Status.done] == [ids[0]] and moved[Status.escalated] == [ids[1], ids[2]]
    assert not moved[Status.needs_review]
    with session_scope(engine) as session:  # a redelivered message records nothing
        again = lifecycle.record(
            session=session, decisions=decisions, tier="small", token="t1", next_tier="large"
        )
        assert not any(again.values())
        first = documents.get_document(session=session, document_id=ids[0])
        assert (first.status, first.label, first.answered_by) == (Status.done, "World", "small")
        second = documents.get_document(session=session, document_id=ids[1])
        assert (second.status, second.current_tier, second.label) == (Status.escalated, "large", None)
        assert len(documents.list_attempts(session=session, document_id=ids[1])) == 1
        assert reports.total_cost(session=session) == 3000
        report = reports.cost_report(session=session)
        assert report["baseline_nanousd"] == 30000 and report["documents"] == 3
    with session_scope(engine) as session:  # the large tier takes the escalated ones; last tier reviews
        assert [d.id for d in lifecycle.claim(session=session, ids=ids, tier="large", token="t3")] == ids[1:]
        lifecycle.record(
            session=session,
            decisions=[Decision(doc_id=i, outcome=Outcome.escalated, attempts=[]) for i in ids[1:]],
            tier="large",
            token="t3",
            next_tier=None,
        )
        assert documents.get_document(session=session, document_id=ids[2]).status == Status.needs_review
    with session_scope(engine) as session:  # nothing is stale yet
        assert (
            lifecycle.stale(session=session, older_than=timedelta(minutes=5), idle_tiers=["small", "large"])
            == {}
        )
    engine.dispose()


def test_migrations_build_exactly_the_models_schema(database_url: str) -> None:
    """The Alembic history and the SQLModel tables agree: no change is left without a migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    import store.models  # noqa: F401  (registers every table on SQLModel.metadata)

    migrate(database_url)
    engine = make_engine(database_url)
    with engine.connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    engine.dispose()
    assert drift == []
