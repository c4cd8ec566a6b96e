"""The state machine in store/crud.py: guarded claims and records, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from classifiers.cascade import AttemptRecord, Decision
from classifiers.costs import Usage
from docsort.config import default_taxonomy
from store import crud
from store.db import make_engine, migrate, session_scope
from store.models import DocumentCreate, Status


def attempt(doc_id: int, label: str | None, outcome: str, cost: int = 1000) -> AttemptRecord:
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
        tax = crud.put_taxonomy(session=session, spec=default_taxonomy())
        docs = crud.create_documents(
            session=session,
            items=[DocumentCreate(text=f"doc {i}") for i in range(3)],
            taxonomy=tax,
            stage="small",
        )
        ids = [d.id for d, _ in docs]
    with session_scope(engine) as session:
        claimed = crud.claim(session=session, ids=ids, stage="small", token="t1")
        assert [d.id for d in claimed] == ids
        assert crud.claim(session=session, ids=ids, stage="small", token="t2") == []  # taken
    decisions = [
        Decision(
            doc_id=ids[0],
            verdict="accept",
            label="World",
            confidence=0.9,
            attempts=[attempt(ids[0], "World", "accepted")],
        ),
        Decision(
            doc_id=ids[1],
            verdict="escalate",
            label="Sports",
            confidence=0.2,
            attempts=[attempt(ids[1], "Sports", "escalated")],
        ),
        Decision(doc_id=ids[2], verdict="escalate", attempts=[attempt(ids[2], None, "invalid")]),
    ]
    with session_scope(engine) as session:
        moved = crud.record(
            session=session, decisions=decisions, stage="small", token="t1", next_stage="large"
        )
    assert moved == {"done": [ids[0]], "escalated": [ids[1], ids[2]], "needs_review": []}
    with session_scope(engine) as session:  # a redelivered message records nothing
        again = crud.record(
            session=session, decisions=decisions, stage="small", token="t1", next_stage="large"
        )
        assert again == {"done": [], "escalated": [], "needs_review": []}
        first = crud.get_document(session=session, document_id=ids[0])
        assert (first.status, first.label, first.tier) == (Status.done, "World", "small")
        second = crud.get_document(session=session, document_id=ids[1])
        assert (second.status, second.stage, second.label) == (Status.escalated, "large", None)
        assert len(crud.list_attempts(session=session, document_id=ids[1])) == 1
        assert crud.total_cost(session=session) == 3000
        report = crud.cost_report(session=session)
        assert report["baseline_nanousd"] == 30000 and report["documents"] == 3
    with session_scope(engine) as session:  # the large tier takes the escalated ones; last tier reviews
        assert [d.id for d in crud.claim(session=session, ids=ids, stage="large", token="t3")] == ids[1:]
        crud.record(
            session=session,
            decisions=[Decision(doc_id=i, verdict="escalate", attempts=[]) for i in ids[1:]],
            stage="large",
            token="t3",
            next_stage=None,
        )
        assert crud.get_document(session=session, document_id=ids[2]).status == Status.needs_review
    with session_scope(engine) as session:  # nothing is stale yet
        assert (
            crud.stale(session=session, older_than=timedelta(minutes=5), idle_stages=["small", "large"]) == {}
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
