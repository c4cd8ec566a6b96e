"""Cascade benchmarks on a labelled dev set with the offline model pair (llama.cpp).

(a) input tokens per document and accuracy at batch sizes 1, 4, 8, 16 (small tier);
(b) small-only, large-only, cascade and oracle (the same code as `docsort eval`);
(c) how well each confidence method ranks right above wrong answers (AUROC).
Run: .venv/bin/python -m bench.cascade --dataset ../shared/datasets/ag_news_test.dev.jsonl --limit 60
"""

from __future__ import annotations

import argparse
import json
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from classifiers.calibration import auroc
from classifiers.evaluate import Labelled, correct, load_jsonl, report
from classifiers.taxonomy import from_dataset_labels
from core.config import Settings
from docsort import evalrun


def sample(rows: list[Labelled], limit: int, seed: int = 7) -> list[Labelled]:
    """A fixed, seeded, label-stratified-ish sample (shuffled, first `limit`)."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def batching(settings: Settings, rows: list[Labelled], sizes: list[int]) -> list[dict[str, Any]]:
    """(a) tokens per document and accuracy of the small tier at each batch size."""
    taxonomy = from_dataset_labels("dataset", [g for r in rows for g in r.gold], multi_label=False)
    small = settings.llm_tiers[0]  # the first tier that calls a model (the local one leads)
    out = []
    for size in sizes:
        tier = small.model_copy(update={"batch_size": size, "request_token_budget": 100_000})
        started = time.perf_counter()
        result = evalrun.run_tier(settings.model_copy(update={"models": [tier]}), taxonomy, tier, rows)
        ok = [correct(r.gold, p, False) for r, p in zip(rows, result.predicted, strict=True)]
        out.append(
            {
                "batch_size": size,
                "input_tokens_per_doc": sum(result.input_tokens) / len(rows),
                "output_tokens_per_doc": sum(result.output_tokens) / len(rows),
                "accuracy": sum(ok) / len(rows),
                "seconds_per_doc": (time.perf_counter() - started) / len(rows),
            }
        )
        print(json.dumps(out[-1]), flush=True)
    return out


def packing(settings: Settings, rows: list[Labelled], sizes: list[int]) -> list[dict[str, Any]]:
    """Prompt tokens per document from packing alone (the model's own tokenizer, no model call)."""
    from classifiers.evaluate import docs_of
    from classifiers.packing import pack, system_prompt, user_prompt
    from classifiers.tokens import get_tokenizer

    taxonomy = from_dataset_labels("dataset", [g for r in rows for g in r.gold], multi_label=False)
    tier = settings.llm_tiers[0]
    tokenizer = get_tokenizer(
        tier.tokenizer, str(settings.weights_path(tier.weights)) if tier.weights else None
    )
    system = len(tokenizer.encode(system_prompt(taxonomy)))
    out = []
    for size in sizes:
        batches = pack(
            docs_of(rows),
            tokenizer,
            batch_size=size,
            request_token_budget=100_000,
            doc_token_budget=tier.doc_token_budget,
        )
        total = sum(system + len(tokenizer.encode(user_prompt(b, taxonomy))) for b in batches)
        out.append(
            {"batch_size": size, "prompt_tokens_per_doc": total / len(rows), "tokenizer": tokenizer.name}
        )
        print(json.dumps(out[-1]), flush=True)
    return out


def confidence_methods(settings: Settings, rows: list[Labelled]) -> list[dict[str, Any]]:
    """(c) AUROC of each confidence method on the small tier, with the accuracy it came with."""
    taxonomy = from_dataset_labels("dataset", [g for r in rows for g in r.gold], multi_label=False)
    small = settings.llm_tiers[0]  # the first tier that calls a model (the local one leads)
    variants = {
        "label_logprobs (json_object batch)": {"transport": "json_object", "confidence": "label_logprobs"},
        "stated (json_object batch)": {"transport": "json_object", "confidence": "stated"},
        "label_logprobs (label_only, 1 doc)": {
            "transport": "label_only",
            "confidence": "label_logprobs",
            "top_logprobs": 20,
        },
    }
    out = []
    for name, update in variants.items():
        tier = small.model_copy(update=update)
        result = evalrun.run_tier(settings.model_copy(update={"models": [tier]}), taxonomy, tier, rows)
        ok = [correct(r.gold, p, False) for r, p in zip(rows, result.predicted, strict=True)]
        out.append(
            {
                "method": name,
                "auroc": auroc(result.confidence, ok),
                "accuracy": sum(ok) / len(rows),
                "input_tokens_per_doc": sum(result.input_tokens) / len(rows),
            }
        )
        print(json.dumps(out[-1]), flush=True)
    return out


def cascade(settings: Settings, rows: list[Labelled]) -> dict[str, Any]:
    """(b) small-only, large-only, cascade (thresholds from settings) and oracle."""
    taxonomy = from_dataset_labels("dataset", [g for r in rows for g in r.gold], multi_label=False)
    results = [evalrun.run_tier(settings, taxonomy, tier, rows) for tier in settings.llm_tiers]
    thresholds = [tier.threshold for tier in settings.llm_tiers]
    out = report(rows, results, thresholds, taxonomy.label_names)
    for system in out["systems"].values():
        system.pop("per_class", None)
    print(json.dumps(out, indent=1), flush=True)
    return out


def main() -> None:
    """Run the parts asked for and write one JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--parts", default="a,b,c")
    parser.add_argument("--sizes", default="1,4,8,16")
    parser.add_argument("--json", type=Path, default=Path("bench-cascade.json"))
    args = parser.parse_args()
    settings = Settings()
    rows = sample(load_jsonl(args.dataset), args.limit)
    out: dict[str, Any] = {
        "dataset": args.dataset.name,
        "documents": len(rows),
        "tiers": [t.model for t in settings.llm_tiers],
    }
    if "p" in args.parts:
        out["packing"] = packing(settings, rows, [int(s) for s in args.sizes.split(",")])
    with evalrun.endpoints(settings) if set(args.parts) - {"p", ","} else nullcontext():
        if "a" in args.parts:
            out["batching"] = batching(settings, rows, [int(s) for s in args.sizes.split(",")])
        if "c" in args.parts:
            out["confidence"] = confidence_methods(settings, rows)
        if "b" in args.parts:
            out["cascade"] = cascade(settings, rows)
    args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
