"""The default cascade's workload for bench/throughput.py: dev-set texts, a trained local tier, scoring.

Each dataset is a taxonomy of its own, taught through the API as a user would (PUT the taxonomy, POST
gold examples; the worker's retrain task trains the local model), on the labels bench/learning_curve.py
uses for one of its points, and streamed with texts that model never trained on:
- ag_news_test: the 400 labels learning_curve draws for fold 0 (400 labels, p = 0.9); the stream is fold
  0's 100 texts (learning_curve pools all five folds: 500 texts, five models).
- banking77: 1,000 rows of banking77.train.jsonl drawn as learning_curve draws them; the stream is the
  500 dev texts (the same protocol as learning_curve's 1,000-label BANKING77 row: one model).
Document i is its text with " #<i>" appended, so that neither the API's dedup nor any cache serves a
repeat. `python -m bench.cascade_load [dataset...]` trains learning_curve's own model for each workload
in-process and scores the stream's texts bare and suffixed: the reference the pipeline is held to.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import text

from bench.learning_curve import FOLDS, folds_of, load, truth
from classifiers.local import LocalClassifier, TrainParams, train
from store.db import make_engine
from tests.processes import wait_for

DATASETS = ("ag_news_test", "banking77")


@dataclass
class Workload:
    """A taxonomy, the labels its local model learns from, and the labelled texts streamed."""

    name: str
    labels: list[str]
    train: list[tuple[str, str]]
    stream: list[tuple[str, str]]
    protocol: str


def workload(dataset: str) -> Workload:
    """The training labels and the stream of one dataset (see the module docstring)."""
    rows = [r for r in load(f"{dataset}.dev") if "label" in r]
    labels = sorted({r["label"] for r in rows})
    if dataset == "banking77":
        pool = load("banking77.train")
        picked = np.random.default_rng(7).permutation(len(pool))[:1000]
        train = [(pool[i]["text"], pool[i]["label"]) for i in picked]
        stream = [(r["text"], str(truth(r))) for r in rows]
        protocol = "learning_curve banking77 auto 1,000 labels (pool), scored on the 500 dev texts"
    else:
        folds = folds_of(rows)
        pool_idx = np.concatenate([folds[g] for g in range(1, FOLDS)])
        picked = np.random.default_rng(100).permutation(pool_idx)[:400]
        train = [(rows[i]["text"], str(truth(rows[i]))) for i in picked]
        stream = [(rows[i]["text"], str(truth(rows[i]))) for i in folds[0]]
        protocol = f"learning_curve {dataset} auto 400 labels, fold 0 of 5 ({len(stream)} texts)"
    return Workload(dataset.replace("_", "-"), labels, train, stream, protocol)


def document(load_: Workload, i: int) -> dict[str, Any]:
    """The i-th document of a workload's stream."""
    body, _ = load_.stream[i % len(load_.stream)]
    return {"text": f"{body} #{i}", "taxonomy": load_.name, "external_id": f"{load_.name}:{i}"}


def teach(client: httpx.Client, load_: Workload, timeout_s: float = 1800) -> dict[str, Any]:
    """Create the taxonomy, post its gold labels in one request, wait for the worker's trained model."""
    spec = {"labels": [{"name": label} for label in load_.labels]}
    client.put(f"/v1/taxonomies/{load_.name}", json=spec).raise_for_status()
    examples = [{"text": t, "label": y} for t, y in load_.train]
    stored = client.post(f"/v1/taxonomies/{load_.name}/examples", json={"examples": examples})
    stored.raise_for_status()

    def active() -> dict[str, Any] | None:
        versions = client.get(f"/v1/taxonomies/{load_.name}/local-models").json()
        return next((v for v in versions if v["active"]), None)

    started = time.perf_counter()
    model = wait_for(active, timeout_s, f"a trained local model for {load_.name}", interval=1.0)
    assert model is not None
    return {
        "version": model["version"],
        "features": model["features"],
        "threshold": model["threshold"],
        "train_wait_s": round(time.perf_counter() - started, 1),
        "train_seconds": model["metrics"].get("train_seconds"),
    }


def score(
    database_url: str, data_dir: Path, loads: list[Workload], model_versions: dict[str, int]
) -> dict[str, Any]:
    """Per workload: the local tier's share and accuracy in the pipeline, and the same model in-process."""
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT external_id, answered_by, label, status FROM document")).all()
    engine.dispose()
    out: dict[str, Any] = {}
    by_load: dict[str, list[tuple[int, str | None, str | None, str]]] = {}
    for external_id, answered_by, label, status in rows:
        name, i = str(external_id).rsplit(":", 1)
        by_load.setdefault(name, []).append((int(i), answered_by, label, str(status)))
    for load_ in loads:
        docs = sorted(by_load.get(load_.name, []))
        local = [(i, label) for i, by, label, _ in docs if by == "local"]
        right = sum(label == load_.stream[i % len(load_.stream)][1] for i, label in local)
        result: dict[str, Any] = {
            "documents": len(docs),
            "statuses": dict(Counter(s for *_, s in docs)),
            "local_share": len(local) / len(docs) if docs else 0.0,
            "local_accuracy": right / len(local) if local else None,
            "protocol": load_.protocol,
        }
        result["in_process"] = in_process(data_dir, load_, model_versions[load_.name], docs)
        out[load_.name] = result
    return out


def in_process(
    data_dir: Path, load_: Workload, version: int, docs: list[tuple[int, str | None, str | None, str]]
) -> dict[str, Any]:
    """The same model file on the stream's first pass, called directly: what the pipeline should match."""
    model = LocalClassifier.load(data_dir / "local_models" / f"{load_.name}-v{version}.joblib")
    first = [d for d in docs if d[0] < len(load_.stream)]
    predictions = model.predict([document(load_, i)["text"] for i, *_ in first])
    sure = [p.confidence >= model.threshold for p in predictions]
    answered = [
        p.label == load_.stream[i][1] for (i, *_), p, s in zip(first, predictions, sure, strict=True) if s
    ]
    same = sum(
        (by == "local") == s and (not s or label == p.label)
        for (_, by, label, _), p, s in zip(first, predictions, sure, strict=True)
    )
    return {
        "texts": len(first),
        "gated_share": float(np.mean([p.gated for p in predictions])) if first else 0.0,
        "local_share": sum(sure) / len(first) if first else 0.0,
        "local_accuracy": float(np.mean(answered)) if answered else None,
        "pipeline_agrees": same / len(first) if first else None,
    }


def reference(dataset: str) -> dict[str, Any]:
    """learning_curve's own model for the workload, trained in-process, on the stream's texts bare and suffixed.

    Tells apart what moves the local tier's share between learning_curve and the pipeline: the model
    (the worker trains on the same labels in the store's order, so its folds differ) and the " #i".
    """
    load_ = workload(dataset)
    model = train([t for t, _ in load_.train], [y for _, y in load_.train], TrainParams(features="auto"))
    out: dict[str, Any] = {
        "dataset": dataset,
        "protocol": load_.protocol,
        "features": model.features.kind,
        "gate": model.metrics.get("gate"),
    }
    for name, texts in (
        ("bare", [t for t, _ in load_.stream]),
        ("suffixed", [document(load_, i)["text"] for i in range(len(load_.stream))]),
    ):
        for gated, used in (("", model), ("_without_gate", replace(model, gate=None))):
            started = time.perf_counter()
            predictions = used.predict(texts)
            seconds = time.perf_counter() - started
            sure = [p.confidence >= model.threshold for p in predictions]
            right = [p.label == y for p, s, (_, y) in zip(predictions, sure, load_.stream, strict=True) if s]
            out[name + gated] = {
                "local_share": float(np.mean(sure)),
                "local_accuracy": float(np.mean(right)) if right else None,
                "gated_share": float(np.mean([p.gated for p in predictions])),
                "docs_per_s": round(len(texts) / seconds, 1),
            }
    return out


if __name__ == "__main__":
    import json
    import sys

    for name in sys.argv[1:] or DATASETS:
        print(json.dumps(reference(name)), flush=True)
