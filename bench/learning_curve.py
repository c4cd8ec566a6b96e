"""Benchmark: the local tier's learning curve, and the embedding throughput.

For each dataset and number of labels n, 5-fold cross-validation over the dev set: each fold is scored
once by a local model trained (classifiers/local.py, exactly as the worker trains) on n labels drawn from
the other folds. BANKING77 also trains on 1,000 and 5,000 labels from banking77.train.jsonl and is then
scored on the whole dev set. Multi-label datasets (reuters21578_r10_modapte_test, nlupp) work the same
way; an answer is right only if it is exactly the document's label set. A document the local model
answers (calibrated confidence at or above its threshold) costs nothing; every other one goes to the
LLM side.

THE LLM SIDE IS SIMULATED: one large tier (gpt-4o prices) that is right with probability
--large-accuracy on every document it gets, independently of the local tier; accuracies are the
expected ones (so large-only is exactly --large-accuracy, and the cascade is the local tier's right
answers plus --large-accuracy times the documents it hands on). Its cost per
document is docsort's own estimate (classifiers.local.reference_cost): the document's tokens (MiniLM's
WordPiece count standing in for gpt-4o's tokenizer, which cannot be fetched offline) cut to the tier's
doc_token_budget, its share of the system prompt at batch_size 8, and a 16-token answer.

    .venv/bin/python bench/learning_curve.py [--datasets ag_news_test banking77 cfpb_complaints]
        [--features tfidf auto] [--large-accuracy 0.9] [--json out.json]
    .venv/bin/python bench/learning_curve.py --throughput
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifiers import embeddings  # noqa: E402
from classifiers.local import NotEnoughLabels, TrainParams, as_label, train  # noqa: E402
from classifiers.local_runner import reference_cost  # noqa: E402
from classifiers.taxonomy import from_dataset_labels  # noqa: E402
from classifiers.tokens import ApproxTokenizer, Tokenizer  # noqa: E402
from core.tiers import GPT_4O, ModelTier  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
SIZES = [0, 50, 200, 400]
POOL_SIZES = {"banking77": [1000, 5000]}
FOLDS = 5


def load(name: str) -> list[dict[str, Any]]:
    """Rows of a dataset file under shared/datasets."""
    with (DATASETS / f"{name}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


class WordPiece:
    """MiniLM's tokenizer behind docsort's Tokenizer protocol (a real subword count, offline)."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        path = embeddings.tokenizer_path()
        self._tok = HFTokenizer.from_file(str(path))
        self._tok.no_truncation()
        self._tok.no_padding()
        self.name = "wordpiece:all-MiniLM-L6-v2"

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, tokens: list[int]) -> str:
        return str(self._tok.decode(tokens))


def truth(row: dict[str, Any]) -> Any:
    """A row's label, or its sorted tuple of labels (a multi-label answer is right only if exact)."""
    return as_label(row["label"] if "label" in row else row["labels"])


def folds_of(rows: list[dict[str, Any]], seed: int = 0) -> list[np.ndarray]:
    """FOLDS disjoint index sets covering rows, in a seeded order."""
    order = np.random.default_rng(seed).permutation(len(rows))
    return [order[f::FOLDS] for f in range(FOLDS)]


def score(
    test: list[dict[str, Any]], model: Any, large_accuracy: float, cost: Any, cache: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The cascade's and large-only's expected right answers and costs on test."""
    predictions = model.predict([r["text"] for r in test], cache) if model is not None else [None] * len(test)
    out: dict[str, Any] = {"local": 0, "local_right": 0, "cascade_right": 0.0, "large_right": 0.0}
    out.update(cascade_nano=0, large_nano=0, n=len(test))
    for row, p in zip(test, predictions, strict=True):
        price = cost(row["text"])
        out["large_right"] += large_accuracy
        out["large_nano"] += price
        if p is not None and p.confidence >= model.threshold:
            out["local"] += 1
            right = p.answer == truth(row)
            out["local_right"] += right
            out["cascade_right"] += right
        else:
            out["cascade_right"] += large_accuracy  # right with that probability, whatever the document
            out["cascade_nano"] += price
    return out


def add(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value


def summary(name: str, features: str, n: int, total: dict[str, Any], seconds: list[float]) -> dict[str, Any]:
    """One row of the learning curve."""
    docs = total["n"]
    return {
        "dataset": name,
        "features": features,
        "labels": n,
        "documents": docs,
        "local_share": total["local"] / docs,
        "local_accuracy": total["local_right"] / total["local"] if total["local"] else None,
        "cascade_accuracy": total["cascade_right"] / docs,
        "large_accuracy": total["large_right"] / docs,
        "cascade_per_1k_usd": total["cascade_nano"] / 1e9 * 1000 / docs,
        "large_per_1k_usd": total["large_nano"] / 1e9 * 1000 / docs,
        "train_seconds": float(np.mean(seconds)) if seconds else 0.0,
        "chosen": total.get("chosen", {}),
    }


def curve(name: str, features: str, args: argparse.Namespace, tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """The learning curve of one dataset with one feature setting."""
    rows = [r for r in load(f"{name}.dev") if "label" in r or "labels" in r]
    multi = "labels" in rows[0]
    labels = sorted({x for r in rows for x in (r["labels"] if multi else [r["label"]])})
    large = ModelTier(name="large", model="gpt-4o", price=GPT_4O, batch_size=8)
    cost = reference_cost(from_dataset_labels(name, labels, multi_label=multi), large, tokenizer)
    params = TrainParams(
        features=features,
        target_accuracy=args.target or args.large_accuracy,
        embed_backend=args.embed_backend,
        embed_max_tokens=args.embed_max_tokens,
        gate=args.gate,
    )
    cache: dict[str, np.ndarray] = {}
    folds = folds_of(rows)
    results = []
    sizes = [n for n in args.sizes if n <= len(rows) - len(folds[0])]
    if len(rows) - len(folds[0]) < max(args.sizes):
        sizes.append(len(rows) - len(folds[0]))  # the whole rest: CFPB's dev set has fewer than 400 to spare
    for n in sizes:
        total: dict[str, Any] = {}
        seconds: list[float] = []
        chosen: dict[str, int] = {}
        for f, test_idx in enumerate(folds):
            pool = np.concatenate([folds[g] for g in range(FOLDS) if g != f])
            picked = np.random.default_rng(100 + f).permutation(pool)[:n]
            model = None
            if n:
                started = time.monotonic()
                try:
                    model = train(
                        [rows[i]["text"] for i in picked], [truth(rows[i]) for i in picked], params, cache
                    )
                    chosen[model.features.kind] = chosen.get(model.features.kind, 0) + 1
                except NotEnoughLabels:
                    model = None
                seconds.append(time.monotonic() - started)
            add(total, score([rows[i] for i in test_idx], model, args.large_accuracy, cost, cache))
        total["chosen"] = chosen
        results.append(summary(name, features, n, total, seconds))
        print(json.dumps(results[-1]), flush=True)
    for n in POOL_SIZES.get(name, []) if args.pool else []:
        pool_rows = load(f"{name}.train")
        picked = np.random.default_rng(7).permutation(len(pool_rows))[:n]
        started = time.monotonic()
        model = train(
            [pool_rows[i]["text"] for i in picked], [pool_rows[i]["label"] for i in picked], params, cache
        )
        total = score(rows, model, args.large_accuracy, cost, cache)
        total["chosen"] = {model.features.kind: 1}
        results.append(summary(name, features, n, total, [time.monotonic() - started]))
        print(json.dumps(results[-1]), flush=True)
    return results


def _embed_in_process(texts: list[str], max_tokens: int, threads: int, backend: str = "onnx-q8") -> float:
    """Seconds one process with its own ONNX embedder takes for texts (after a warm-up)."""
    embedder = embeddings.OnnxMiniLM(max_tokens, threads=threads, quantized=backend == "onnx-q8")
    embedder.embed(texts[:32])
    started = time.perf_counter()
    embedder.embed(texts)
    return time.perf_counter() - started


def prefork(texts: list[str], max_tokens: int, repeats: int, backend: str) -> list[dict[str, Any]]:
    """Two processes embedding at once, as a Celery prefork worker's two children do, per thread count."""
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    for threads in (1, 2):
        best = 0.0
        for _ in range(repeats):
            with ProcessPoolExecutor(2) as pool:
                started = time.perf_counter()
                args = [[texts] * 2, [max_tokens] * 2, [threads] * 2, [backend] * 2]
                list(pool.map(_embed_in_process, *args))
                best = max(best, 2 * len(texts) / (time.perf_counter() - started))
        row: dict[str, Any] = {"backend": f"{backend}, 2 processes at once", "threads": threads}
        row["docs"] = 2 * len(texts)
        row |= {"docs_per_s": round(best, 1), "load_average": os.getloadavg()[0]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def throughput(
    repeats: int = 3, max_tokens: int = 128, dataset: str = "ag_news_test"
) -> list[dict[str, Any]]:
    """Documents per second embedding a dev set's texts, per backend and thread count."""
    data = load(f"{dataset}.dev")
    texts = [r["text"] for r in data]
    out = []
    model = train(texts[:400], [r["label"] for r in data[:400]], TrainParams(features="tfidf"))
    started = time.perf_counter()
    model.predict(texts)
    row = {"backend": "tfidf model: features + predict", "threads": 1, "docs": len(texts)}
    row["docs_per_s"] = round(len(texts) / (time.perf_counter() - started), 1)
    out.append(row)
    print(json.dumps(row), flush=True)
    for backend in ("static", "onnx-q8", "onnx", "torch"):
        if not embeddings.available(backend):
            continue
        for threads in (1,) if backend == "static" else (1, 2):
            if backend == "static":
                embedder: Any = embeddings.StaticMiniLM(max_tokens)
            elif backend in ("onnx", "onnx-q8"):
                embedder = embeddings.OnnxMiniLM(max_tokens, threads=threads, quantized=backend == "onnx-q8")
            else:
                import torch

                torch.set_num_threads(threads)
                embedder = embeddings.TorchMiniLM(max_tokens)
            embedder.embed(texts[:32])  # warm up
            best = 0.0
            for _ in range(repeats):
                started, cpu = time.perf_counter(), time.process_time()
                embedder.embed(texts)
                wall, used = time.perf_counter() - started, time.process_time() - cpu
                best = max(best, len(texts) / wall)
            row = {"backend": backend, "threads": threads, "docs": len(texts), "docs_per_s": round(best, 1)}
            row["cpu_s_per_doc_ms"] = round(1000 * used / len(texts), 2)
            row["load_average"] = os.getloadavg()[0]
            out.append(row)
            print(json.dumps(row), flush=True)
    for backend in ("onnx-q8", "onnx"):
        if embeddings.available(backend):
            out += prefork(texts, max_tokens, repeats, backend)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["ag_news_test", "banking77", "cfpb_complaints"])
    parser.add_argument("--features", nargs="+", default=["tfidf", "auto"])
    parser.add_argument("--sizes", nargs="+", type=int, default=SIZES)
    parser.add_argument("--large-accuracy", type=float, default=0.9, help="Simulated large tier's accuracy")
    parser.add_argument(
        "--target", type=float, default=None, help="Local target accuracy; default: the above"
    )
    parser.add_argument("--no-pool", dest="pool", action="store_false", help="Skip BANKING77's 1k and 5k")
    parser.add_argument("--throughput", action="store_true", help="Only measure embedding throughput")
    parser.add_argument("--embed-backend", default="onnx-q8", choices=["onnx-q8", "onnx", "torch", "static"])
    parser.add_argument("--embed-max-tokens", type=int, default=128, help="Tokens a text is cut to")
    parser.add_argument("--throughput-dataset", default="ag_news_test", help="Texts --throughput embeds")
    parser.add_argument(
        "--no-gate", dest="gate", action="store_false", help="No TF-IDF gate (as measured before session 7)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.throughput:
        report: Any = throughput(max_tokens=args.embed_max_tokens, dataset=args.throughput_dataset)
    else:
        tokenizer: Tokenizer = WordPiece() if embeddings.available("onnx") else ApproxTokenizer()
        report = [
            row for name in args.datasets for f in args.features for row in curve(name, f, args, tokenizer)
        ]
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
