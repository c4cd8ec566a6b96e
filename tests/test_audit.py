"""Measured trust, with a real worker and Redis: audits of a tier that answers wrongly on purpose (the fake
provider at the HTTP seam), the drift guard stopping trust in it, undoing that, and where labels came from."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from core.config import AuditSettings, LocalSettings, Settings
from core.tiers import local_tier
from docsort.services import free_port
from store.models import Example
from tests.conftest import make_settings, running
from tests.processes import FakeProvider, wait_for
from tests.test_ledger import FAST, PRICES, fake_tiers
from worker.app import create_celery

pytestmark = pytest.mark.slow
FINAL = {"done", "needs_review"}
TOPICS = ["Sports", "Business", "World", "Sci/Tech"]


def texts(n: int, start: int = 0) -> list[str]:
    return [f"{TOPICS[i % 4]} story {i}: a report on what happened today." for i in range(start, start + n)]


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[FakeProvider]:
    fake = FakeProvider(free_port(), tmp_path / "fake.log", PRICES)
    yield fake
    fake.kill()


def post(client: TestClient, items: list[str]) -> list[int]:
    r = client.post("/v1/documents", json={"documents": [{"text": t} for t in items]})
    assert r.status_code == 202, r.text
    return [d["id"] for d in r.json()["data"]]


def finished(client: TestClient, ids: list[int]) -> list[dict[str, Any]]:
    def final() -> list[dict[str, Any]] | None:
        docs = [client.get(f"/v1/documents/{i}").json() for i in ids]
        return docs if all(d["status"] in FINAL for d in docs) else None

    docs: list[dict[str, Any]] = wait_for(final, 120, "every document final", interval=0.5)
    return docs


def tier_row(client: TestClient, tier: str) -> dict[str, Any]:
    report = client.get("/v1/quality").json()
    row: dict[str, Any] = next(r for r in report["tiers"] if r["tier"] == tier)
    return row


def problem(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    detail: str = response.json()["detail"]
    return detail


def settings_for(tmp_path: Path, database_url: str, redis_url: str, port: int, **kw: Any) -> Settings:
    return make_settings(
        tmp_path,
        database_url,
        redis_url,
        models=[local_tier(), *fake_tiers(port)],
        worker=FAST,
        audit=AuditSettings(rate=1.0, min_support=5),
        **kw,
    )


def test_a_tier_gone_bad_is_measured_distrusted_and_trusted_again(
    tmp_path: Path, fresh_redis: str, provider: FakeProvider, database_url: str
) -> None:
    settings = settings_for(
        tmp_path,
        database_url,
        fresh_redis,
        int(provider.url.rsplit(":", 1)[1]),
        local=LocalSettings(min_examples=500),
    )
    provider.configure(wrong_for=["fake-small"])  # small confidently answers the next label: always wrong
    with running(settings, create_celery(settings)) as client:
        first = finished(client, post(client, texts(8)))
        assert {d["tier"] for d in first} == {"small"}  # small accepted them all, wrongly
        small = wait_for(
            lambda: (row := tier_row(client, "small"))["trust"] != "trusted" and row, 60, "the guard to act"
        )
        assert small["audits"] >= 5 and small["agreement"] == 0.0
        assert small["interval_90"][1] < small["implied_agreement"]  # confidently below what 0.9 implies
        report = client.get("/v1/quality").json()
        [change] = report["changes"]
        assert change["action"] == "escalate_all" and change["in_force"] and change["evidence"]["audits"] >= 5
        assert "agreement" in change["reason"] and "not accuracy" in report["note"]
        # The documents keep the label they were given; each audit is stored with its own label.
        again = [client.get(f"/v1/documents/{d['id']}").json() for d in first]
        assert [(d["label"], d["tier"]) for d in again] == [(d["label"], d["tier"]) for d in first]
        audit_attempts = [a for d in again for a in d["attempts"] if a["purpose"] == "audit"]
        assert len(audit_attempts) == 8 and {a["tier"] for a in audit_attempts} == {"large"}
        # Audit spend is shown apart, and not in the documents' or the cascade's cost.
        costs = client.get("/v1/costs").json()
        assert costs["audits"]["attempts"] == 8 and costs["audits"]["cost_usd"] > 0
        assert costs["cost_usd"] == pytest.approx(sum(d["cost_usd"] for d in again))
        assert {row["tier"] for row in costs["audits"]["by_tier"]} == {"large"}
        # While distrusted, small's answers are escalated: the next documents are answered by large.
        time.sleep(11)  # a worker looks trust changes up every 10 s
        escalated = finished(client, post(client, texts(4, start=100)))
        assert {d["tier"] for d in escalated} == {"large"}
        # A person undoes it: small is trusted again (the guard counts audits afresh from now).
        undone = client.post(f"/v1/quality/changes/{change['id']}/undo", json={"by": "tester"})
        assert undone.status_code == 200, undone.text
        assert not undone.json()["in_force"] and "tester" in undone.json()["undone_by"]
        assert "undone already" in problem(client.post(f"/v1/quality/changes/{change['id']}/undo"), 409)
        assert tier_row(client, "small")["trust"] == "trusted"
        time.sleep(11)
        trusted = finished(client, post(client, texts(2, start=200)))
        assert {d["tier"] for d in trusted} == {"small"}
        # Provenance of every learned label: audits and the last tier's answers, never distrusted small's.
        with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
            origins = {e.origin for e in session.exec(select(Example))}
        assert origins and origins <= {"audit", "large"}
        # Bad input to the new endpoints: problem+json, never a 500.
        assert "does not exist" in problem(client.get("/v1/quality", params={"taxonomy": "nope"}), 404)
        problem(client.get("/v1/quality", params={"taxonomy": "bad name!"}), 422)
        problem(client.get("/v1/quality", params={"since": "yesterday"}), 422)
        problem(client.post("/v1/quality/changes/987654/undo"), 404)
        problem(client.post(f"/v1/quality/changes/{change['id']}/undo", json={"by": ""}), 422)
        stats = client.get("/v1/stats").json()
        assert stats["quality"]["taxonomy"] == "news" and len(stats["quality"]["tiers"]) == 3


def test_a_local_model_that_disagrees_with_its_audits_is_set_aside(
    tmp_path: Path, fresh_redis: str, provider: FakeProvider
) -> None:
    settings = settings_for(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        fresh_redis,
        int(provider.url.rsplit(":", 1)[1]),
        local=LocalSettings(features="tfidf", min_examples=40, min_support=5, target_accuracy=0.8),
    )
    wrong = {topic: TOPICS[(i + 1) % 4] for i, topic in enumerate(TOPICS)}
    # Gold labels that are all wrong (each topic taught as the next): a local model confidently wrong.
    examples = [{"text": t, "label": wrong[t.split(" ")[0]]} for t in texts(80, start=1000)]
    with running(settings, create_celery(settings)) as client:
        r = client.post("/v1/taxonomies/news/examples", json={"examples": examples})
        assert r.status_code == 201 and r.json()["retrain_queued"], r.text
        wait_for(
            lambda: any(m["active"] for m in client.get("/v1/taxonomies/news/local-models").json()),
            120,
            "a model",
        )
        docs = finished(client, post(client, texts(8, start=300)))
        assert sum(d["tier"] == "local" for d in docs) >= 5  # it answers, wrongly
        local = wait_for(
            lambda: (row := tier_row(client, "local"))["trust"] != "trusted" and row, 60, "the guard to act"
        )
        assert local["trust"] == "set_aside_local" and local["local_model"] is None
        [change] = client.get("/v1/quality").json()["changes"]
        assert "set aside" in change["reason"] and change["local_model_id"] is not None
        r = client.post(f"/v1/quality/changes/{change['id']}/undo")
        assert r.status_code == 200, r.text
        versions = client.get("/v1/taxonomies/news/local-models").json()
        assert [m["active"] for m in versions if m["version"] == 1] == [True]  # a person's call: back again
        with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
            origins = {e.origin for e in session.exec(select(Example))}
        assert origins == {"gold", "audit"}  # the local tier's own answers are never learnt from
