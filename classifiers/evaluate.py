"""Scoring tiers and the cascade on labelled documents, through the same runners the workers use."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.calibration import Calibrator, auroc
from classifiers.costs import NANO_PER_USD
from classifiers.decision import Decision
from classifiers.packing import DocIn


@dataclass(frozen=True)
class Labelled:
    """A dataset row: text and its gold label(s)."""

    id: str
    text: str
    gold: tuple[str, ...]


def load_jsonl(path: Path, limit: int | None = None) -> list[Labelled]:
    """Rows of a JSONL dataset with `label` or `labels`."""
    rows: list[Labelled] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            data = json.loads(line)
            gold = data["labels"] if "labels" in data else [data["label"]]
            rows.append(Labelled(str(data.get("id", len(rows))), data["text"], tuple(gold)))
            if limit and len(rows) >= limit:
                break
    return rows


@dataclass
class TierResult:
    """One tier's answer on every row."""

    tier: str
    predicted: list[tuple[str, ...]]
    confidence: list[float]
    cost_nanousd: list[int]
    input_tokens: list[int]
    output_tokens: list[int]
    methods: list[str] = field(default_factory=list)

    @classmethod
    def from_decisions(cls, tier: str, decisions: Sequence[Decision]) -> TierResult:
        """Collect a runner's decisions (every attempt's tokens and cost count)."""
        predicted, confidence, cost, tin, tout, methods = [], [], [], [], [], []
        for d in decisions:
            labels = tuple(d.labels) if d.labels is not None else ((d.label,) if d.label else ())
            predicted.append(labels)
            confidence.append(d.confidence if d.confidence is not None else 0.0)
            cost.append(sum(a.cost_nanousd for a in d.attempts))
            tin.append(sum(a.usage.input_tokens for a in d.attempts))
            tout.append(sum(a.usage.output_tokens for a in d.attempts))
            methods.append(next((a.confidence_method or "" for a in reversed(d.attempts)), ""))
        return cls(tier, predicted, confidence, cost, tin, tout, methods)


def docs_of(rows: Sequence[Labelled]) -> list[DocIn]:
    """Rows as runner input, numbered by position."""
    return [DocIn(i, row.text) for i, row in enumerate(rows)]


def _f1(
    gold: Sequence[tuple[str, ...]], pred: Sequence[tuple[str, ...]], labels: Sequence[str]
) -> dict[str, Any]:
    per_class = {}
    tp_all = fp_all = fn_all = 0
    for label in labels:
        tp = sum(label in g and label in p for g, p in zip(gold, pred, strict=True))
        fp = sum(label not in g and label in p for g, p in zip(gold, pred, strict=True))
        fn = sum(label in g and label not in p for g, p in zip(gold, pred, strict=True))
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    supported = [v["f1"] for v in per_class.values() if v["support"] > 0]
    micro_p = tp_all / (tp_all + fp_all) if tp_all + fp_all else 0.0
    micro_r = tp_all / (tp_all + fn_all) if tp_all + fn_all else 0.0
    micro = 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0
    return {
        "macro_f1": float(np.mean(supported)) if supported else 0.0,
        "micro_f1": micro,
        "per_class": per_class,
    }


def score(
    name: str,
    gold: Sequence[tuple[str, ...]],
    pred: Sequence[tuple[str, ...]],
    labels: Sequence[str],
    *,
    cost_nanousd: int,
    input_tokens: int,
    output_tokens: int,
    escalation_rate: float | None = None,
    threshold: float | None = None,
    multi_label: bool = False,
) -> dict[str, Any]:
    """The report row for one system."""
    n = len(gold)
    if multi_label:
        accuracy = sum(set(g) == set(p) for g, p in zip(gold, pred, strict=True)) / n if n else 0.0
    else:
        accuracy = sum(p[:1] == g[:1] for g, p in zip(gold, pred, strict=True)) / n if n else 0.0
    f1 = _f1(gold, pred, labels)
    row: dict[str, Any] = {
        "system": name,
        "documents": n,
        "accuracy": accuracy,
        "macro_f1": f1["macro_f1"],
        "cost_usd": cost_nanousd / NANO_PER_USD,
        "cost_per_1k_docs": (cost_nanousd / NANO_PER_USD) * 1000 / n if n else 0.0,
        "escalation_rate": escalation_rate,
        "threshold": threshold,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "per_class": f1["per_class"],
    }
    if multi_label:
        row["micro_f1"] = f1["micro_f1"]
    return row


def correct(gold: tuple[str, ...], pred: tuple[str, ...], multi_label: bool) -> bool:
    """Whether a prediction is right (exact set match for multi-label)."""
    return set(gold) == set(pred) if multi_label else pred[:1] == gold[:1]


def report(
    rows: Sequence[Labelled],
    results: Sequence[TierResult],
    thresholds: Sequence[float],
    labels: Sequence[str],
    *,
    multi_label: bool = False,
    calibrators: Sequence[Calibrator | None] | None = None,
) -> dict[str, Any]:
    """Each tier alone, the cascade at thresholds, and the oracle (first tier, exactly its errors go on)."""
    gold = [row.gold for row in rows]
    calibrators = calibrators or [None] * len(results)
    confidences = [
        [cal(c) if cal else c for c in result.confidence]
        for result, cal in zip(results, calibrators, strict=True)
    ]
    systems = [
        score(
            r.tier,
            gold,
            r.predicted,
            labels,
            cost_nanousd=sum(r.cost_nanousd),
            input_tokens=sum(r.input_tokens),
            output_tokens=sum(r.output_tokens),
            multi_label=multi_label,
        )
        for r in results
    ]
    cascade_pred, cost, tin, tout, escalated = [], 0, 0, 0, 0
    answered_at = [0] * len(results)
    right_at = [0] * len(results)
    for i in range(len(rows)):
        for level, (result, conf) in enumerate(zip(results, confidences, strict=True)):
            cost += result.cost_nanousd[i]
            tin += result.input_tokens[i]
            tout += result.output_tokens[i]
            last = level == len(results) - 1
            if last or conf[i] >= thresholds[level]:
                cascade_pred.append(result.predicted[i])
                escalated += level > 0
                answered_at[level] += 1
                right_at[level] += correct(gold[i], result.predicted[i], multi_label)
                break
    systems.append(
        score(
            "cascade",
            gold,
            cascade_pred,
            labels,
            cost_nanousd=cost,
            input_tokens=tin,
            output_tokens=tout,
            escalation_rate=escalated / len(rows) if rows else 0.0,
            threshold=thresholds[0],
            multi_label=multi_label,
        )
    )
    first, final = results[0], results[-1]
    wrong = [not correct(g, p, multi_label) for g, p in zip(gold, first.predicted, strict=True)]
    oracle_pred = [f if w else p for p, f, w in zip(first.predicted, final.predicted, wrong, strict=True)]
    systems.append(
        score(
            "oracle",
            gold,
            oracle_pred,
            labels,
            cost_nanousd=sum(first.cost_nanousd)
            + sum(c for c, w in zip(final.cost_nanousd, wrong, strict=True) if w),
            input_tokens=sum(first.input_tokens)
            + sum(t for t, w in zip(final.input_tokens, wrong, strict=True) if w),
            output_tokens=sum(first.output_tokens)
            + sum(t for t, w in zip(final.output_tokens, wrong, strict=True) if w),
            escalation_rate=sum(wrong) / len(rows) if rows else 0.0,
            multi_label=multi_label,
        )
    )
    right = [[correct(g, p, multi_label) for g, p in zip(gold, r.predicted, strict=True)] for r in results]
    return {
        "systems": {s["system"]: s for s in systems},
        # Each tier's part in the cascade: the share of documents it answered, and how many of those right.
        "cascade_tiers": {
            r.tier: {
                "answered": n,
                "share": n / len(rows) if rows else 0.0,
                "accuracy": ok / n if n else None,
            }
            for r, n, ok in zip(results, answered_at, right_at, strict=True)
        },
        "auroc": {r.tier: auroc(r.confidence, ok) for r, ok in zip(results, right, strict=True)},
        "confidence_methods": {r.tier: sorted(set(r.methods)) for r in results},
    }
