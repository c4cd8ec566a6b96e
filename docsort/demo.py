"""The demo: teach the local tier from labelled news, bring the stack up, classify the bundled samples,
and show each answer beside the truth, accuracy and share per tier, and the cost against all-large."""

from __future__ import annotations

import json
import time
from collections import Counter
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from core.config import Settings
from core.vocab import FINAL, Origin
from docsort.services import stack

TRAINING_SET = "samples/news_train.jsonl"


def _jsonl(name: str) -> list[dict[str, Any]]:
    text = files("docsort").joinpath(name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def samples() -> list[dict[str, Any]]:
    """The 20 bundled sample documents with their true labels (written for docsort)."""
    return _jsonl("samples/news.jsonl")


def training_items() -> list[dict[str, Any]]:
    """The 400 labelled news items the demo teaches the local tier with (written for docsort)."""
    return _jsonl(TRAINING_SET)


def teach(settings: Settings, console: Console) -> None:
    """Store the training set as gold labels of the default taxonomy and train the local tier on them,
    as `docsort train` does."""
    from store import examples, taxonomies
    from store.db import make_engine, migrate, session_scope
    from worker import training

    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    items = [{"text": r["text"], "label": r["label"]} for r in training_items()]
    with session_scope(engine) as session:
        row = taxonomies.put_taxonomy(session=session, spec=settings.default_taxonomy)
        taxonomy = taxonomies.to_runtime(row)
        examples.add_examples(session=session, taxonomy=taxonomy, items=items, origin=Origin.gold)
    started = time.monotonic()
    model = training.train_version(engine=engine, settings=settings, taxonomy=taxonomy)
    engine.dispose()
    metrics = model.metrics
    if "error" in metrics:
        console.print(f"[yellow]local tier not trained: {metrics['error']}[/]")
        return
    console.print(
        f"local tier: trained on {len(items)} labelled items ({TRAINING_SET}) in "
        f"{time.monotonic() - started:.0f}s; {model.features} features, held-out accuracy {model.score:.2f}; "
        f"it answers where its calibrated confidence is at least {model.threshold:.2f}, "
        f"which held {metrics['target_accuracy']:.0%} accuracy on labels it never saw."
    )


def classify_samples(
    base_url: str, timeout_s: float, console: Console
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """POST the samples, wait until each is final, return the documents and the cost report."""
    items = samples()
    with httpx.Client(base_url=base_url, timeout=30) as client:
        body = {"documents": [{"text": s["text"], "external_id": s["id"]} for s in items]}
        response = client.post("/v1/documents", json=body)
        response.raise_for_status()
        ids = [d["id"] for d in response.json()["data"]]
        console.print(f"submitted {len(ids)} documents; waiting for the cascade…")
        deadline = time.monotonic() + timeout_s
        docs: dict[int, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            for doc_id in ids:
                if docs.get(doc_id, {}).get("status") not in FINAL:
                    docs[doc_id] = client.get(f"/v1/documents/{doc_id}").json()
            if all(d["status"] in FINAL for d in docs.values()):
                break
            time.sleep(1)
        else:
            raise TimeoutError(f"documents not classified within {timeout_s:.0f}s")
        costs = client.get("/v1/costs").json()
    return [docs[i] for i in ids], costs


def summary(docs: list[dict[str, Any]], truth: dict[str, str]) -> dict[str, Any]:
    """Per tier: documents answered and how many right; overall accuracy; documents for review."""
    answered: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for doc in docs:
        if doc["status"] == "done":
            answered[doc["tier"]] += 1
            right[doc["tier"]] += doc["label"] == truth[doc["external_id"]]
    return {
        "answered": dict(answered),
        "right": dict(right),
        "review": sum(doc["status"] == "needs_review" for doc in docs),
        "failed": sum(doc["status"] == "failed" for doc in docs),
        "correct": sum(right.values()),
        "total": len(docs),
    }


def render(docs: list[dict[str, Any]], costs: dict[str, Any], tiers: list[str], console: Console) -> None:
    """The table of documents beside the truth, accuracy and share per tier, and the totals."""
    truth = {s["id"]: s["label"] for s in samples()}
    table = Table(title="docsort demo: bundled sample documents")
    for column in ("document", "true label", "answer", "status", "tier", "confidence", "cost (USD)"):
        table.add_column(column, justify="right" if column in {"confidence", "cost (USD)"} else "left")
    for doc in docs:
        confidence = doc["confidence"]
        expected = truth[doc["external_id"]]
        mark = "" if doc["label"] is None else (" ✓" if doc["label"] == expected else " ✗")
        table.add_row(
            doc["external_id"],
            expected,
            (doc["label"] or "-") + mark,
            doc["status"],
            doc["tier"] or "-",
            f"{confidence:.2f}" if confidence is not None else "-",
            f"{doc['cost_usd']:.6f}",
        )
    console.print(table)
    result = summary(docs, truth)
    total = result["total"]
    shares = Table(title="by tier")
    for column in ("tier", "answered", "share", "right", "accuracy"):
        shares.add_column(column, justify="left" if column == "tier" else "right")
    for tier in tiers:
        n, ok = result["answered"].get(tier, 0), result["right"].get(tier, 0)
        shares.add_row(tier, str(n), f"{n / total:.0%}", str(ok), f"{ok / n:.0%}" if n else "-")
    shares.add_row("needs review", str(result["review"]), f"{result['review'] / total:.0%}", "-", "-")
    console.print(shares)
    console.print(
        f"overall accuracy:       {result['correct']}/{total} = {result['correct'] / total:.1%} "
        "(a document left for review counts as not right)"
    )
    console.print(f"total cost:             ${costs['cost_usd']:.6f}")
    console.print(f"cost per 1,000 docs:    ${costs['cost_per_1k_docs']:.4f}")
    console.print(f"if all went to large:   ${costs['cost_if_all_large_usd']:.6f}")
    console.print(f"saving:                 ${costs['saving_usd']:.6f} ({costs['saving_pct']:.1f}%)")


def run_demo(settings: Settings, *, timeout_s: float = 900.0) -> int:
    """docsort demo: teach, up, submit, wait, print, down. Returns the exit code."""
    console = Console()
    # A database of its own, new each run: the demo shows the same thing every time.
    database = Path(settings.data_dir) / "demo.db"
    for path in (database, database.with_name("demo.db-wal"), database.with_name("demo.db-shm")):
        path.unlink(missing_ok=True)
    settings = settings.model_copy(update={"database_url": f"sqlite:///{database}"})
    if any(tier.weights for tier in settings.models):
        console.print(
            "[bold]Offline mode:[/] the LLM tiers are tiny models served by llama.cpp on this machine "
            f"({', '.join(t.model for t in settings.llm_tiers)}), priced as gpt-4o-mini and gpt-4o so that "
            "the costs show what the cascade would save; they prove the machinery, not the quality. "
            "The quality comes from the local tier, which learns from labels."
        )
    if settings.learns:
        teach(settings, console)
    with stack(settings, with_flower=True) as live:
        base = f"http://{live.api.host}:{live.api.port}"
        console.print(f"API docs: {base}/docs   Flower: http://{live.flower.host}:{live.flower.port}")
        docs, costs = classify_samples(base, timeout_s, console)
    render(docs, costs, [tier.name for tier in settings.models], console)
    return 0
