"""Benchmark: the review console and the document list at 1,000,000 documents (SQLite and PostgreSQL).

Builds a database of N documents spread over 30 days (statuses, tiers, confidences, one attempt each and
2% audits, shaped like a running cascade), refreshes the daily roll-up, then times, through the real app:

    deepest_page   GET /v1/documents?cursor=<last page>&limit=100 (keyset pagination at the end)
    review_queue   GET /console/review?taxonomy=news&tier=large&order=least_confident (filtered queue)
    dashboard      GET /console/dashboard (counts by status and tier, the roll-up chart, quality)
    first_page     GET /v1/documents?limit=100 (the baseline: the cheapest page)

Each is requested --repeats times after a warm-up; p50 and p95 in ms are printed, the goal being a p95
under 200 ms, and the ratio of each p95 to the first page's. With --screenshots DIR it also saves the
review page and the dashboard as PNG (Chromium, as the console tests drive it).

Run: .venv/bin/python -m bench.console --database sqlite --n 1000000
     .venv/bin/python -m bench.console --database postgres --n 1000000
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy

from core.config import Settings
from core.vocab import AuditStatus, Outcome, Status
from store import rollup, spend, taxonomies
from store.db import make_engine, migrate, session_scope
from store.models import Attempt, Audit, Document

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TIERS = [("local", 0.60), ("small", 0.20), ("large", 0.08)]


def rows(n: int, seed: int = 7) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Documents, attempts and audits shaped like a month of a running cascade."""
    rnd = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=30)
    docs, attempts, audits = [], [], []
    labels = ["World", "Sports", "Business", "Sci/Tech"]
    for i in range(1, n + 1):
        when = start + timedelta(seconds=i * 30 * 86400 / n)
        roll = rnd.random()
        if roll < 0.88:
            tier = "local" if roll < 0.60 else ("small" if roll < 0.80 else "large")
            status, answered_by = Status.done, tier
        elif roll < 0.98:
            tier, status, answered_by = "large", Status.needs_review, "large"
        else:
            tier, status, answered_by = "local", Status.queued, None
        confidence = round(rnd.random(), 4) if answered_by else None
        label = rnd.choice(labels) if answered_by else None
        docs.append(
            {
                "id": i,
                "text": f"document {i}: a short news item about {label or 'something'} number {i}",
                "content_hash": uuid.UUID(int=rnd.getrandbits(128)).hex + f"{i:032x}"[:32],
                "taxonomy": "news" if i % 10 else "tickets",
                "taxonomy_version": 1,
                "status": status.value,
                "current_tier": tier,
                "answered_by": answered_by,
                "label": label,
                "confidence": confidence,
                "metadata": "{}",
                "created_at": when,
                "updated_at": when,
            }
        )
        if answered_by:
            cost = {"local": 0, "small": 40_000, "large": 700_000}[tier]
            attempts.append(
                {
                    "document_id": i,
                    "tier": tier,
                    "model": tier,
                    "request_id": uuid.UUID(int=rnd.getrandbits(128)).hex,
                    "label": label,
                    "confidence": confidence,
                    "input_tokens": 300,
                    "cached_tokens": 0,
                    "output_tokens": 12,
                    "cost_nanousd": cost,
                    "reference_nanousd": 700_000,
                    "latency_ms": 5,
                    "outcome": (Outcome.accepted if status == Status.done else Outcome.review).value,
                    "purpose": "classify",
                    "created_at": when,
                }
            )
            if status == Status.done and tier != "large" and rnd.random() < 0.02:
                agree = rnd.random() < 0.9
                audits.append(
                    {
                        "document_id": i,
                        "taxonomy": docs[-1]["taxonomy"],
                        "tier": tier,
                        "label": label,
                        "confidence": confidence,
                        "auditor": "large",
                        "audit_label": label if agree else "World",
                        "agree": agree,
                        "status": AuditStatus.done.value,
                        "created_at": when,
                        "settled_at": when,
                    }
                )
    return docs, attempts, audits


def load(url: str, n: int) -> dict[str, float]:
    """Migrate url and fill it with n documents; seconds per step."""
    timings: dict[str, float] = {}
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        settings = Settings(data_dir=Path(tempfile.mkdtemp()))
        taxonomies.put_taxonomy(session=session, spec=settings.default_taxonomy)
        spec = settings.default_taxonomy.model_copy(update={"name": "tickets"})
        taxonomies.put_taxonomy(session=session, spec=spec)
    started = time.perf_counter()
    docs, attempts, audits = rows(n)
    timings["generate_s"] = time.perf_counter() - started
    started = time.perf_counter()
    for table, data in (("document", docs), ("attempt", attempts), ("audit", audits)):
        _bulk(engine, table, data)
    timings["insert_s"] = time.perf_counter() - started
    with engine.begin() as conn:
        if url.startswith("postgresql"):
            conn.execute(sqlalchemy.text("SELECT setval('document_id_seq', (SELECT max(id) FROM document))"))
    # What autovacuum does for a live database after a bulk load: statistics, and PostgreSQL's visibility
    # map (without it, index-only counts visit every row).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sqlalchemy.text("VACUUM ANALYZE" if url.startswith("postgresql") else "ANALYZE"))
    started = time.perf_counter()
    with session_scope(engine) as session:
        days = rollup.days_to_refresh(session=session, today=spend.today())
        rollup.refresh(session=session, days=days)
    timings["rollup_all_days_s"] = time.perf_counter() - started
    started = time.perf_counter()
    with session_scope(engine) as session:
        rollup.refresh(session=session, days=rollup.days_to_refresh(session=session, today=spend.today()))
    with session_scope(engine) as session:
        rollup.refresh_counts(session=session)
    timings["rollup_periodic_s"] = time.perf_counter() - started  # as beat runs it: 2 days and the counts
    engine.dispose()
    return timings


def _bulk(engine: sqlalchemy.Engine, table: str, data: list[dict[str, Any]]) -> None:
    if not data:
        return
    columns = list(data[0])
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            with (
                raw.cursor() as cursor,
                cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
            ):  # type: ignore[attr-defined]
                for row in data:
                    copy.write_row([row[c] for c in columns])
            raw.commit()
        finally:
            raw.close()
        return
    model = {"document": Document, "attempt": Attempt, "audit": Audit}[table].__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        for start in range(0, len(data), 50_000):
            chunk = data[start : start + 50_000]
            if table == "document":
                chunk = [{**r, "metadata": {}} for r in chunk]
            conn.execute(model.insert(), chunk)


def measure(url: str, n: int, repeats: int, screenshots: Path | None) -> dict[str, Any]:
    """Request each page repeats times through the app; ms at p50 and p95."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    data = Path(tempfile.mkdtemp())
    settings = Settings(
        data_dir=data, database_url=url, redis_url="redis://127.0.0.1:6379/13", log_json=False
    )
    app = create_app(settings)
    pages = {
        "first_page": "/v1/documents?limit=100",
        "deepest_page": f"/v1/documents?limit=100&cursor={n - 100}",
        "review_queue": "/console/review?taxonomy=news&tier=large&order=least_confident",
        "dashboard": "/console/dashboard?taxonomy=news",
    }
    out: dict[str, Any] = {}
    with TestClient(app) as client:
        for name, path in pages.items():
            for _ in range(3):
                assert client.get(path).status_code == 200, path  # warm-up
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            times.sort()
            out[name] = {
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
            }
            print(name, out[name], flush=True)
        if screenshots is not None:
            _screenshots(app, screenshots)
    return out


def _screenshots(app: Any, folder: Path) -> None:
    """The review page and the dashboard as the console shows them, served by a real server."""
    import shutil
    import threading

    import uvicorn
    from playwright.sync_api import sync_playwright

    from docsort.services import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    time.sleep(2)
    chromium = shutil.which("chromium") or "chromium"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/console/review?taxonomy=news&order=least_confident")
            page.screenshot(path=str(folder / "console-review.png"), full_page=True)
            page.goto(f"http://127.0.0.1:{port}/console/dashboard?taxonomy=news")
            page.screenshot(path=str(folder / "console-dashboard.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--screenshots", type=Path, default=None)
    args = parser.parse_args()
    if args.database == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp()}/console.db"
        drop = None
    else:
        name = f"docsort_bench_{uuid.uuid4().hex[:8]}"
        admin = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        drop = (admin, name)
    try:
        timings = load(url, args.n)
        print("load", {k: round(v, 1) for k, v in timings.items()}, flush=True)
        result = measure(url, args.n, args.repeats, args.screenshots)
    finally:
        if drop is not None:
            admin, name = drop
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    base = result["first_page"]["p95_ms"]
    for name, row in result.items():
        verdict = "ok" if row["p95_ms"] < 200 else "OVER the 200 ms goal"
        print(
            f"{args.database} n={args.n} {name}: p95 {row['p95_ms']} ms ({row['p95_ms'] / base:.1f}x the first page) {verdict}"
        )


if __name__ == "__main__":
    main()
