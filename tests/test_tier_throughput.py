"""GET /v1/stats: each tier's pace over the last minute, from the attempts it recorded."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from core.vocab import Outcome
from store.db import make_engine, session_scope
from store.models import Attempt, utcnow
from tests.conftest import make_settings


def attempts(doc_ids: list[int], tier: str, request_id: str, latency_ms: int, **kw: object) -> list[Attempt]:
    """One attempt per document of one request (they share its latency, as the runners record them)."""
    return [
        Attempt(
            document_id=i,
            tier=tier,
            model=tier,
            request_id=request_id,
            latency_ms=latency_ms,
            outcome=Outcome.accepted,
            **kw,  # type: ignore[arg-type]
        )
        for i in doc_ids
    ]


def test_stats_show_each_tiers_pace_and_which_one_is_slow(
    tmp_path: Path, database_url: str, fresh_redis: str
) -> None:
    settings = make_settings(tmp_path, database_url, fresh_redis)
    with TestClient(create_app(settings)) as client:
        posted = client.post("/v1/documents", json={"documents": [{"text": f"doc {i}"} for i in range(30)]})
        ids = [d["id"] for d in posted.json()["data"]]
        old = utcnow() - timedelta(minutes=5)
        rows = [
            # local: two batches of 12 in 0.1 s and 0.3 s: 24 documents in 0.4 s of work
            *attempts(ids[:12], "local", "local-a", 100),
            *attempts(ids[12:24], "local", "local-b", 300),
            # small: the 6 the local tier handed on, one request of 3 s
            *attempts(ids[24:], "small", "req-1", 3000),
            # not counted: an audit (not classifying) and attempts from before the window
            *attempts(ids[:2], "large", "audit-1", 500, purpose="audit"),
            *attempts(ids[:10], "small", "req-old", 100, created_at=old),
        ]
        engine = make_engine(settings.db_url)
        with session_scope(engine) as session:
            session.add_all(rows)
        engine.dispose()
        body = client.get("/v1/stats").json()["tier_throughput"]
    assert body["window_s"] == 60
    tiers = body["tiers"]
    assert set(tiers) == {"local", "small"}
    assert tiers["local"]["documents"] == 24 and tiers["local"]["requests"] == 2
    assert abs(tiers["local"]["docs_per_s"] - 24 / 60) < 1e-9
    assert abs(tiers["local"]["busy_docs_per_s"] - 24 / 0.4) < 1e-6  # busy time per request, not per attempt
    assert tiers["small"]["documents"] == 6 and tiers["small"]["requests"] == 1
    assert abs(tiers["small"]["busy_docs_per_s"] - 6 / 3.0) < 1e-6
    # The operator's question: the small tier, not the local one, bounds this pipeline.
    assert min(tiers, key=lambda t: tiers[t]["busy_docs_per_s"]) == "small"
