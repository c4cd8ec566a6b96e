"""The state machine in store/lifecycle.py: guarded claims and records, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy.event
import sqlalchemy.exc
from sqlalchemy import Engine, func, text, update
from sqlmodel import Session, col, select

from classifiers.costs import Usage
from classifiers.decision import AttemptRecord, Decision, PlannedRequest
from classifiers.providers import Completion
from core.config import SpendSettings, WorkerSettings
from core.errors import SpendCapReached
from core.taxonomy_spec import default_taxonomy
from core.vocab import Outcome, RequestState, Status
from store import documents, lifecycle, reports, requests, spend, taxonomies
from store.db import make_engine, migrate, session_scope
from store.models import NANO, Document, DocumentCreate, ModelRequest, utcnow
from tests.conftest import make_settings
from worker.books import DatabaseLedger

T = TypeVar("T")


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
        hour_ago = utcnow() - timedelta(hours=1)
        lease = {"small": hour_ago, "large": hour_ago}
        assert (
            lifecycle.stale(session=session, lease_ends=lease, waiting_since=hour_ago, idle_tiers=["small"])
            == {}
        )
    engine.dispose()


def test_a_text_stored_before_or_twice_in_a_request_is_one_row_even_from_two_writers_at_once(
    database_url: str,
) -> None:
    migrate(database_url)
    engine = make_engine(database_url)

    def store(session: Session, texts: list[str]) -> list[tuple[documents.Stored, bool]]:
        tax = taxonomies.get_taxonomy(session=session, name=default_taxonomy().name)
        items = [DocumentCreate(text=t) for t in texts]
        return documents.create_documents(session=session, items=items, taxonomy=tax, first_tier="small")

    with session_scope(engine) as session:
        taxonomies.put_taxonomy(session=session, spec=default_taxonomy())
    with session_scope(engine) as session:
        first = store(session, ["a", "b"])
    with session_scope(engine) as session:
        again = store(session, ["b", "c", "c", "a"])
    assert [new for _, new in again] == [False, True, False, False]
    assert [s.id for s, _ in again] == [first[1][0].id, again[1][0].id, again[1][0].id, first[0][0].id]
    # A second writer storing the same text while the first has not committed waits for it, then
    # gets its row (no IntegrityError, no second row).
    with ThreadPoolExecutor(1) as pool, session_scope(engine) as session:
        mine = store(session, ["d"])
        theirs = pool.submit(lambda: _in_new_session(engine, store, ["e", "d"]))
        time.sleep(0.5)
        assert not theirs.done()  # waiting for this transaction
    other = theirs.result(timeout=30)
    assert [new for _, new in other] == [True, False]
    assert other[1][0].id == mine[0][0].id
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(Document)).one() == 5


def _in_new_session(engine: Engine, fn: Callable[[Session, list[str]], T], texts: list[str]) -> T:
    with session_scope(engine) as session:
        return fn(session, texts)


def test_a_dead_tasks_claim_expires_a_live_one_is_renewed(database_url: str) -> None:
    migrate(database_url)
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        tax = taxonomies.put_taxonomy(session=session, spec=default_taxonomy())
        docs = documents.create_documents(
            session=session,
            items=[DocumentCreate(text=f"lease {i}") for i in range(2)],
            taxonomy=tax,
            first_tier="small",
        )
        ids = [d.id for d, _ in docs]
        lifecycle.claim(session=session, ids=ids[:1], tier="small", token="dead")
        lifecycle.claim(session=session, ids=ids[1:], tier="small", token="live")
        hour_ago = utcnow() - timedelta(hours=1)
        session.execute(update(Document).where(col(Document.id).in_(ids)).values(claimed_at=hour_ago))
    with session_scope(engine) as session:
        requests.touch_claims(session=session, doc_ids=ids[1:], token="live")  # before its next request
        requests.touch_claims(session=session, doc_ids=ids[:1], token="someone else")  # not its claim
    with session_scope(engine) as session:
        ten_minutes_ago = utcnow() - timedelta(minutes=10)
        found = lifecycle.stale(
            session=session, lease_ends={"small": ten_minutes_ago}, waiting_since=hour_ago, idle_tiers=[]
        )
        assert found == {"small": [ids[0]]}
        lifecycle.release(session=session, ids=found["small"], first_tier="small")
        assert documents.get_document(session=session, document_id=ids[0]).status == Status.queued
        assert documents.get_document(session=session, document_id=ids[1]).status == Status.classifying
    engine.dispose()


def test_a_tasks_ledger_renews_its_claims_only_once_half_the_lease_grace_has_passed(
    database_url: str, tmp_path: Path
) -> None:
    migrate(database_url)
    engine = make_engine(database_url)
    settings = make_settings(tmp_path, database_url, "", worker=WorkerSettings(lease_grace_s=30))
    hour_ago = utcnow() - timedelta(hours=1)
    with session_scope(engine) as session:
        tax = taxonomies.put_taxonomy(session=session, spec=default_taxonomy())
        docs = documents.create_documents(
            session=session, items=[DocumentCreate(text="renew")], taxonomy=tax, first_tier="small"
        )
        ids = [d.id for d, _ in docs]
        lifecycle.claim(session=session, ids=ids, tier="small", token="t")

    def claimed_at_after_a_request(renewed_at: float) -> datetime:
        with session_scope(engine) as session:  # as if claimed an hour ago, to see whether it moves
            session.execute(update(Document).where(col(Document.id).in_(ids)).values(claimed_at=hour_ago))
        ledger = DatabaseLedger(engine, settings, taxonomy=tax.name, claim_token="t", renewed_at=renewed_at)
        request = PlannedRequest(uuid.uuid4().hex, "small", "m", "classify", tuple(ids), 1, 1, 0, 0)
        ledger.before(request)
        with session_scope(engine) as session:
            at = documents.get_document(session=session, document_id=ids[0]).claimed_at
        assert at is not None
        return at.replace(tzinfo=None)

    naive_hour_ago = hour_ago.replace(tzinfo=None)
    assert claimed_at_after_a_request(time.monotonic()) == naive_hour_ago  # renewed just now: not again
    assert claimed_at_after_a_request(time.monotonic() - 14) == naive_hour_ago
    assert claimed_at_after_a_request(time.monotonic() - 15) > naive_hour_ago + timedelta(minutes=59)
    engine.dispose()


def test_books_settle_each_request_once_and_caps_reserve_atomically(database_url: str) -> None:
    migrate(database_url)
    engine = make_engine(database_url)
    day = spend.today()

    def planned(cost: int) -> PlannedRequest:
        return PlannedRequest(
            id=uuid.uuid4().hex,
            tier="small",
            model="m",
            purpose="classify",
            doc_ids=(1,),
            input_tokens=10,
            max_output_tokens=5,
            estimate_nanousd=cost,
            reserve_nanousd=2 * cost,
        )

    first, second, third = planned(100), planned(100), planned(100)
    with session_scope(engine) as session:
        assert spend.reserve(session=session, day=day, caps={"*": 400, "news": 1000}, amount=200) is None
        requests.add(session=session, request=first, taxonomy="news", claim_token=None, reserved_day=day)
        assert spend.reserve(session=session, day=day, caps={"*": 400, "news": 1000}, amount=200) is None
        requests.add(session=session, request=second, taxonomy="news", claim_token=None, reserved_day=day)
    with session_scope(engine) as session:  # 200 + 200 reserved: a third does not fit under 400
        assert spend.reserve(session=session, day=day, caps={"*": 400}, amount=200) == "*"
        session.rollback()
    with session_scope(engine) as session:
        assert requests.answer(
            session=session,
            request_id=first.id,
            input_tokens=10,
            cached_tokens=0,
            output_tokens=5,
            cost_nanousd=150,
            provider_request_id="p1",
            attempts=[],
        ) == requests.Settled(RequestState.sent, "news", day, 200, 100)
        assert (
            requests.answer(  # a second delivery of the same answer changes nothing
                session=session,
                request_id=first.id,
                input_tokens=10,
                cached_tokens=0,
                output_tokens=5,
                cost_nanousd=150,
                provider_request_id="p1",
                attempts=[],
            )
            is None
        )
        spend.settle(session=session, day=day, scopes=["*", "news"], reserved=200, spent=150)
        assert requests.fail(session=session, request_id=second.id, error="timeout", unanswered=True)
        assert not requests.fail(session=session, request_id=second.id, error="again", unanswered=True)
        spend.settle(session=session, day=day, scopes=["*", "news"], reserved=200, spent=100)
        assert spend.state(session=session, day=day)["*"] == {"spent_nanousd": 250, "reserved_nanousd": 0}
        books = requests.report(session=session)
        assert books["answered"] == {"requests": 1, "cost_nanousd": 150}
        assert books["unanswered"] == {"requests": 1, "cost_nanousd": 100}  # at its estimate
    with session_scope(engine) as session:  # 250 spent: 200 more would pass 400, 100 fits
        assert spend.reserve(session=session, day=day, caps={"*": 400}, amount=200) == "*"
        session.rollback()
    with session_scope(engine) as session:
        assert spend.reserve(session=session, day=day, caps={"*": 400}, amount=100) is None
        requests.add(session=session, request=third, taxonomy="news", claim_token=None, reserved_day=day)
    with session_scope(engine) as session:  # the reconciler finds it overdue
        overdue = requests.overdue(session=session, cutoffs={"small": utcnow() + timedelta(seconds=1)})
        assert [r.id for r in overdue] == [third.id]
    engine.dispose()


def test_a_deferring_ledger_writes_an_answer_with_the_next_write_and_a_refused_cap_keeps_it(
    database_url: str, tmp_path: Path
) -> None:
    """A classify task's answers ride on its next commit; a cap's refusal commits them, reserves nothing."""
    migrate(database_url)
    engine = make_engine(database_url)
    spend_caps = SpendSettings(daily_cap_usd=1000 / NANO, per_taxonomy_daily_cap_usd={"news": 450 / NANO})
    settings = make_settings(tmp_path, database_url, "", spend=spend_caps)
    ledger = DatabaseLedger(engine, settings, taxonomy="news", defer_answers=True)
    day = spend.today()

    def planned() -> PlannedRequest:
        return PlannedRequest(uuid.uuid4().hex, "small", "m", "classify", (1,), 10, 5, 100, 200)

    def answer(request: PlannedRequest) -> None:
        completion = Completion(
            "{}", None, Usage(input_tokens=10, output_tokens=5), 1, f"p-{request.id}", "m"
        )
        ledger.answered(request, completion, 150, [])

    def books() -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
        with session_scope(engine) as session:
            return requests.report(session=session), spend.state(session=session, day=day)

    first, second, third = planned(), planned(), planned()
    ledger.before(first)
    answer(first)
    report, state = books()
    assert report["answered"]["requests"] == 0  # owed, not yet written
    assert state["news"] == {"spent_nanousd": 0, "reserved_nanousd": 200}
    ledger.before(second)  # writes the first's answer, settles it, reserves the second
    report, state = books()
    assert report["answered"] == {"requests": 1, "cost_nanousd": 150}
    assert state["news"] == {"spent_nanousd": 150, "reserved_nanousd": 200}
    answer(second)
    # 300 spent: 200 more passes the taxonomy's 450 (though not the 1,000 of all taxonomies)
    with pytest.raises(SpendCapReached):
        ledger.before(third)
    report, state = books()
    assert report["answered"] == {"requests": 2, "cost_nanousd": 300}  # the refusal kept the answer
    assert state["news"] == {"spent_nanousd": 300, "reserved_nanousd": 0}
    assert state["*"] == {"spent_nanousd": 300, "reserved_nanousd": 0}  # all scopes or none
    with session_scope(engine) as session:
        assert session.get(ModelRequest, third.id) is None
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


def test_the_roll_ups_sum_each_day_and_count_each_status(database_url: str) -> None:
    from datetime import UTC, datetime

    from store import rollup
    from store.models import Attempt, DailyCost

    migrate(database_url)
    engine = make_engine(database_url)
    day1, day2 = datetime(2026, 11, 1, 12, tzinfo=UTC), datetime(2026, 11, 2, 12, tzinfo=UTC)
    with session_scope(engine) as session:
        tax = taxonomies.put_taxonomy(session=session, spec=default_taxonomy())
        made = documents.create_documents(
            session=session,
            items=[DocumentCreate(text=f"roll {i}") for i in range(3)],
            taxonomy=tax,
            first_tier="small",
        )
        ids = [d.id for d, _ in made]
        rows = [  # (document, day, tier, cost, reference, purpose)
            (ids[0], day1, "small", 100, 1000, "classify"),
            (ids[0], day2, "large", 900, 1000, "classify"),  # escalated the next day: not a new document
            (ids[1], day2, "small", 200, 2000, "classify"),
            (ids[1], day2, "large", 50, 50, "audit"),
        ]
        for doc_id, when, tier, cost, ref, purpose in rows:
            session.add(
                Attempt(
                    document_id=doc_id,
                    tier=tier,
                    model=tier,
                    request_id="r",
                    outcome=Outcome.accepted,
                    cost_nanousd=cost,
                    reference_nanousd=ref,
                    purpose=purpose,
                    created_at=when,
                )
            )
        session.execute(
            update(Document).where(col(Document.id) == ids[0]).values(status=Status.done, answered_by="large")
        )
        session.execute(update(Document).where(col(Document.id) == ids[1]).values(status=Status.needs_review))
    with session_scope(engine) as session:
        assert rollup.refresh(session=session, days=[day1.date(), day2.date()]) == 2
        assert rollup.refresh_counts(session=session) == 3
    with session_scope(engine) as session:
        by_day = {r.day: r for r in session.exec(select(DailyCost))}
        assert (by_day[day1.date()].documents, by_day[day1.date()].cost_nanousd) == (1, 100)
        assert by_day[day1.date()].baseline_nanousd == 1000
        assert (by_day[day2.date()].documents, by_day[day2.date()].cost_nanousd) == (1, 1100)
        assert (by_day[day2.date()].baseline_nanousd, by_day[day2.date()].audit_nanousd) == (2000, 50)
        counts, as_of = rollup.counts(session=session, taxonomy="news")
        assert counts == {"done": {"large": 1}, "needs_review": {"-": 1}, "queued": {"-": 1}} and as_of
    engine.dispose()


def test_the_review_queue_pages_least_confident_first_none_first(database_url: str) -> None:
    from store import console

    migrate(database_url)
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        tax = taxonomies.put_taxonomy(session=session, spec=default_taxonomy())
        made = documents.create_documents(
            session=session,
            items=[DocumentCreate(text=f"queue {i}") for i in range(6)],
            taxonomy=tax,
            first_tier="large",
        )
        ids = [d.id for d, _ in made]
        for doc_id, confidence in zip(ids, [None, 0.5, None, 0.2, 0.2, 0.9], strict=True):
            status = Status.done if confidence == 0.9 else Status.needs_review  # one not waiting for a person
            session.execute(
                update(Document)
                .where(col(Document.id) == doc_id)
                .values(status=status, confidence=confidence)
            )
    pages, after = [], None
    with session_scope(engine) as session:
        while True:
            page = console.review_queue(session=session, order="least_confident", after=after, limit=2)
            pages.append([d.id for d in page.documents])
            after = page.next_cursor
            if after is None:
                break
        oldest = console.review_queue(session=session, limit=10)
    assert pages == [[ids[0], ids[2]], [ids[3], ids[4]], [ids[1]]]
    assert [d.id for d in oldest.documents] == [ids[0], ids[1], ids[2], ids[3], ids[4]]
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite has no server to drop it
def test_a_connection_the_server_dropped_fails_once_then_the_pool_reconnects(database_url: str) -> None:
    engine = make_engine(database_url)  # no pre-ping: store/db.py says why
    with session_scope(engine) as session:
        pid = session.exec(text("SELECT pg_backend_pid()")).one()[0]  # type: ignore[call-overload]
    admin = make_engine(database_url)
    with session_scope(admin) as session:  # as a server restart or failover would
        session.exec(text(f"SELECT pg_terminate_backend({int(pid)})"))  # type: ignore[call-overload]
    admin.dispose()
    with pytest.raises(sqlalchemy.exc.OperationalError), session_scope(engine) as session:
        session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    with session_scope(engine) as session:  # the dead connection was dropped from the pool
        assert session.exec(text("SELECT 1")).one()[0] == 1  # type: ignore[call-overload]
    engine.dispose()


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_claims_and_records_find_their_rows_by_primary_key_before_the_table_has_statistics(
    database_url: str,
) -> None:
    migrate(database_url)
    engine = make_engine(database_url)
    sent: list[tuple[str, Any]] = []

    @sqlalchemy.event.listens_for(engine, "before_cursor_execute")
    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("UPDATE document"):
            sent.append((statement, parameters))

    with session_scope(engine) as session:  # a bulk load the planner has no statistics of yet
        tax = taxonomies.put_taxonomy(session=session, spec=default_taxonomy())
        items = [DocumentCreate(text=f"load {i}") for i in range(20_000)]
        ids = [
            d.id
            for d, _ in documents.create_documents(
                session=session, items=items, taxonomy=tax, first_tier="small"
            )
        ]
    with session_scope(engine) as session:
        lifecycle.claim(session=session, ids=ids[:64], tier="small", token="t")
        decisions = [Decision(doc_id=i, outcome=Outcome.escalated, reason="test") for i in ids[:64]]
        lifecycle.record(session=session, decisions=decisions, tier="small", token="t", next_tier="large")
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        for statement, parameters in sent[:2]:  # the claim, and the record (one guarded UPDATE ... FROM)
            cursor.execute("EXPLAIN " + statement, parameters)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "document_pkey" in plan, plan
            assert "ix_document_status" not in plan, plan
    engine.dispose()


@pytest.mark.postgres
def test_the_worker_commits_without_waiting_for_the_wal_only_when_told_and_the_api_always_waits(
    tmp_path: Path, database_url: str
) -> None:
    from worker.runtime import Runtime

    if not database_url.startswith("postgresql"):
        pytest.skip("synchronous_commit is PostgreSQL's")

    def setting(engine: Engine) -> str:
        with engine.connect() as conn:
            value = str(conn.execute(text("SHOW synchronous_commit")).scalar_one())
        engine.dispose()
        return value

    told = make_settings(tmp_path, database_url, "", worker=WorkerSettings(synchronous_commit=False))
    assert setting(Runtime(told).engine) == "off"
    assert setting(Runtime(make_settings(tmp_path, database_url, "")).engine) == "on"
    assert setting(make_engine(told.db_url)) == "on"  # the API's engine: an accepted document is on disk
