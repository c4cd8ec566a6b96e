"""The books against the provider's bill: every answer that reached docsort is recorded once, at the
provider's usage, whatever the fault; what never came back is counted as unanswered. Caps hold with
several worker processes. The provider is tests/fake_provider.py, its own process with its own bill."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from core.config import Settings, SpendSettings, WorkerSettings
from core.tiers import GPT_4O, GPT_4O_MINI, ModelTier
from core.vocab import RequestState
from docsort.services import free_port
from store.models import Attempt, ModelRequest
from tests.conftest import make_settings, running
from tests.processes import BeatProcess, FakeProvider, WorkerProcess, wait_for
from worker.app import create_celery

pytestmark = pytest.mark.slow
PRICES = {"fake-small": (GPT_4O_MINI.input, GPT_4O_MINI.output), "fake-large": (GPT_4O.input, GPT_4O.output)}
FINAL = {"done", "needs_review"}
TEXTS = [
    "Sports: the final went to extra time.",
    "Business: shares fell after the results.",
    "World: the summit ended without a deal.",
    "Sci/Tech: the probe reached orbit.",
    "An unsure note about nothing in particular.",
    "Sports and Business: a club's shares rose.",
]


def fake_tiers(port: int, **overrides: Any) -> list[ModelTier]:
    """Both tiers at the fake provider, priced as gpt-4o-mini and gpt-4o (as the fake bills them)."""
    common: dict[str, Any] = {
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "transport": "json_schema",
        "confidence": "stated",
        "tokenizer": "approx",
        "batch_size": 4,
        "timeout_s": 2.0,
        "max_retries": 5,
        "max_reasks": 2,
        "threshold": 0.5,
    }
    common.update(overrides)
    return [
        ModelTier(name="small", model="fake-small", price=GPT_4O_MINI, **common),
        ModelTier(name="large", model="fake-large", price=GPT_4O, **common),
    ]


FAST = WorkerSettings(
    concurrency=1, flush_interval_s=0.1, lease_grace_s=2, requeue_after_s=3, reconcile_every_s=1
)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[FakeProvider]:
    fake = FakeProvider(free_port(), tmp_path / "fake.log", PRICES)
    yield fake
    fake.kill()


def post(client: TestClient, texts: list[str]) -> list[int]:
    r = client.post("/v1/documents", json={"documents": [{"text": t} for t in texts]})
    assert r.status_code == 202, r.text
    return [d["id"] for d in r.json()["data"]]


def all_final(client: TestClient, ids: list[int]) -> list[dict[str, Any]] | None:
    docs = [client.get(f"/v1/documents/{i}").json() for i in ids]
    return docs if all(d["status"] in FINAL for d in docs) else None


def assert_books_match_the_bill(settings: Settings, engine: Any, bill: dict[str, Any]) -> dict[str, int]:
    """Docsort's books against the provider's bill, request by request; returns requests by state."""
    billed = bill["requests"]
    prices = {t.name: t.price for t in settings.models}
    with Session(engine) as session:
        rows = list(session.exec(select(ModelRequest)))
        attempts = list(session.exec(select(Attempt)))
    states: dict[str, int] = {}
    for row in rows:
        states[row.state] = states.get(row.state, 0) + 1
        if row.state == RequestState.answered:  # delivered: the provider's usage, to the token
            entry = billed[row.id]
            assert (row.input_tokens, row.output_tokens) == (
                entry["prompt_tokens"],
                entry["completion_tokens"],
            )
            assert row.cost_nanousd == entry["cost_nanousd"], row
            assert row.provider_request_id == entry["response_id"]
            shares = [a for a in attempts if a.request_id == row.id]
            assert sum(a.cost_nanousd for a in shares) == row.cost_nanousd  # shared out exactly
            assert len({a.document_id for a in shares}) == len(shares) == len(row.doc_ids)  # once each
            assert prices[row.tier].input > 0
        elif row.state == RequestState.failed:  # an error answer: nothing billed
            assert row.id not in billed and row.cost_nanousd == 0
        else:  # billed (or not) but never delivered: counted at its estimate, flagged
            assert row.state == RequestState.unanswered, row
            assert row.cost_nanousd == row.estimate_nanousd > 0
    delivered = {r.id for r in rows if r.state == RequestState.answered}
    unanswered = {r.id for r in rows if r.state == RequestState.unanswered}
    # Everything the provider billed reached docsort's books: answered, or counted as unanswered.
    assert set(billed) <= delivered | unanswered, set(billed) - delivered - unanswered
    return states


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "429", "when": "batch", "count": 2, "retry_after": 1},
        {"kind": "429", "when": "single", "count": 2, "retry_after": 1},
        {"kind": "500", "when": "any", "count": 2},
        {"kind": "timeout", "when": "batch", "count": 1, "seconds": 4},
        {"kind": "timeout", "when": "single", "count": 1, "seconds": 4},
        {"kind": "truncated", "when": "batch", "count": 1},
        {"kind": "truncated", "when": "single", "count": 1},
        {"kind": "invalid", "when": "batch", "count": 1},
        {"kind": "invalid", "when": "single", "count": 2},
    ],
    ids=lambda f: f"{f['kind']}-{f['when']}",
)
def test_the_books_match_the_bill_whatever_the_fault(
    tmp_path: Path, fresh_redis: str, provider: FakeProvider, fault: dict[str, Any]
) -> None:
    port = int(provider.url.rsplit(":", 1)[1])
    settings = make_settings(
        tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", fresh_redis, models=fake_tiers(port), worker=FAST
    )
    # Re-asks happen where a batch answer leaves a document out: the fake answers "Not-A-Label" for
    # one document in each batch when the fault is on re-asks, so that there are re-asks to fault.
    provider.faults(fault)
    if fault["when"] == "single":
        provider.faults({"kind": "invalid", "when": "batch", "count": 2})
    with running(settings, create_celery(settings)) as client:
        ids = post(client, TEXTS)
        docs = wait_for(lambda: all_final(client, ids), 120, "every document final", interval=0.5)
        states = assert_books_match_the_bill(settings, client.app.state.engine, provider.bill())  # type: ignore[attr-defined]
        costs = client.get("/v1/costs").json()
    assert all(d["status"] in FINAL for d in docs)
    assert costs["requests"]["answered"] == states.get("answered", 0)
    assert costs["unanswered_requests"]["requests"] == states.get("unanswered", 0)
    if fault["kind"] in ("timeout", "truncated"):
        assert states.get("unanswered", 0) >= 1  # billed by the provider, never read by docsort
        assert costs["unanswered_requests"]["cost_usd"] > 0 and costs["unanswered_requests"]["estimated"]
    if fault["kind"] in ("429", "500"):
        assert states.get("failed", 0) >= 1 and states.get("unanswered", 0) == 0
        # A rate limit or a 5xx waits and retries at the same tier; it never escalates a document.
        assert all(a["tier"] == "small" for d in docs if "unsure" not in d["text"] for a in d["attempts"])


def test_a_killed_worker_pays_once_per_request(
    tmp_path: Path, fresh_redis: str, provider: FakeProvider, database_url: str
) -> None:
    port = int(provider.url.rsplit(":", 1)[1])
    settings = make_settings(
        tmp_path, database_url, fresh_redis, models=fake_tiers(port, timeout_s=3.0), worker=FAST
    )
    provider.faults({"kind": "hold", "when": "batch", "count": 1, "seconds": 6})
    from api.main import create_app

    with TestClient(create_app(settings)) as client:
        ids = post(client, TEXTS[:4])
        first = WorkerProcess(settings, tmp_path / "w1.log", "w1")
        beat = BeatProcess(settings, tmp_path / "beat.log")
        try:
            wait_for(lambda: provider.bill()["requests"], 30, "the provider to bill the held answer")
            first.kill()  # the answer is billed and still held: it will never reach docsort
            second = WorkerProcess(settings, tmp_path / "w2.log", "w2")
            try:
                wait_for(lambda: all_final(client, ids), 120, "every document final", interval=0.5)
                time.sleep(1)
                states = assert_books_match_the_bill(settings, client.app.state.engine, provider.bill())  # type: ignore[attr-defined]
            finally:
                second.stop()
        finally:
            first.kill()
            beat.stop()
    assert states.get("unanswered") == 1  # the held request: billed, counted at its estimate, once
    assert len(provider.bill()["requests"]) == states.get("answered", 0) + 1


def test_caps_hold_with_three_worker_processes(
    tmp_path: Path, fresh_redis: str, provider: FakeProvider
) -> None:
    port = int(provider.url.rsplit(":", 1)[1])
    tiers = fake_tiers(port, batch_size=1, timeout_s=10.0, max_output_tokens=64)[
        :1
    ]  # the cap binds at the first
    provider.configure(delay_s=0.5)  # slow: many requests are in flight at once
    cap_usd = 0.0005
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        fresh_redis,
        models=tiers,
        worker=FAST,
        spend=SpendSettings(daily_cap_usd=cap_usd),
    )
    from api.main import create_app

    texts = [f"Business note {i}: the index moved by {i} points today." for i in range(40)]
    workers = [WorkerProcess(settings, tmp_path / f"w{i}.log", f"w{i}") for i in range(3)]
    try:
        with TestClient(create_app(settings)) as client:
            ids = post(client, texts)

            def settled() -> dict[str, Any] | None:
                docs = [client.get(f"/v1/documents/{i}").json() for i in ids]
                waiting = [d for d in docs if d["status"] not in FINAL]
                costs = client.get("/v1/costs").json()
                quiet = costs["requests"]["in_flight"] == 0 and costs["spend"]["reserved_usd"] == 0
                held = all("spending cap" in (d["status_reason"] or "") for d in waiting)
                return {"docs": docs, "costs": costs} if waiting and held and quiet else None

            state = wait_for(settled, 120, "the cap to hold the rest", interval=1)
    finally:
        for worker in workers:
            worker.stop()
    bill = provider.bill()
    most = max(r.reserve_nanousd for r in _requests(settings))
    assert bill["total_nanousd"] <= cap_usd * 1e9 + 3 * most  # at most one request past it per process
    # And the cap is what stopped it: what is left under it is less than the reservations that did not fit.
    assert bill["total_nanousd"] > cap_usd * 1e9 - 4 * most
    assert state["costs"]["spend"]["spent_usd"] * 1e9 == pytest.approx(bill["total_nanousd"])
    done = [d for d in state["docs"] if d["status"] == "done"]
    assert 0 < len(done) < len(ids)


def _requests(settings: Settings) -> list[ModelRequest]:
    from store.db import make_engine

    engine = make_engine(settings.db_url)
    with Session(engine) as session:
        rows = list(session.exec(select(ModelRequest)))
    engine.dispose()
    return rows
