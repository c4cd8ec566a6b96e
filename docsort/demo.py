"""The demo: bring the stack up, classify the bundled samples, print labels and costs, stop."""

from __future__ import annotations

import json
import time
from importlib.resources import files
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from core.config import Settings
from docsort.services import stack

FINAL = {"done", "needs_review", "failed"}


def samples() -> list[dict[str, Any]]:
    """The bundled sample documents (written for docsort; no third-party text)."""
    text = files("docsort").joinpath("samples/news.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


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


def render(docs: list[dict[str, Any]], costs: dict[str, Any], console: Console) -> None:
    """The table of documents and the totals."""
    table = Table(title="docsort demo: bundled sample documents")
    for column in ("document", "label", "status", "tier", "confidence", "cost (USD)"):
        table.add_column(column, justify="right" if column in {"confidence", "cost (USD)"} else "left")
    for doc in docs:
        confidence = doc["confidence"]
        table.add_row(
            doc["external_id"] or str(doc["id"]),
            doc["label"] or "-",
            doc["status"],
            doc["tier"] or "-",
            f"{confidence:.2f}" if confidence is not None else "-",
            f"{doc['cost_usd']:.6f}",
        )
    console.print(table)
    console.print(f"documents:              {costs['documents']}")
    console.print(f"total cost:             ${costs['cost_usd']:.6f}")
    console.print(f"cost per 1,000 docs:    ${costs['cost_per_1k_docs']:.4f}")
    console.print(f"if all went to large:   ${costs['cost_if_all_large_usd']:.6f}")
    console.print(f"saving:                 ${costs['saving_usd']:.6f} ({costs['saving_pct']:.1f}%)")


def run_demo(settings: Settings, *, timeout_s: float = 900.0) -> int:
    """docsort demo: up, submit, wait, print, down. Returns the exit code."""
    console = Console()
    offline = any(tier.weights for tier in settings.models)
    if offline:
        console.print(
            "[bold]Offline mode:[/] tiny local models served by llama.cpp, priced as "
            f"{' / '.join(t.name for t in settings.llm_tiers)} = gpt-4o-mini / gpt-4o to show the "
            "cascade's saving. They prove the machinery, not the quality."
        )
    with stack(settings, with_flower=True) as live:
        base = f"http://{live.api.host}:{live.api.port}"
        console.print(f"API docs: {base}/docs   Flower: http://{live.flower.host}:{live.flower.port}")
        docs, costs = classify_samples(base, timeout_s, console)
    render(docs, costs, console)
    return 0
