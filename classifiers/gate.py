"""The local tier's gate: a cheap model (TF-IDF) that answers before the embedding model is run.

Embedding a text with MiniLM costs ~100x a TF-IDF transform, and bounds the default cascade
(docs/benchmarks.md). Where the TF-IDF candidate is sure, the embedding model is rarely more right, so
a trained model keeps the TF-IDF candidate as its gate, with a threshold of its own: a text whose gate
confidence reaches it is answered by the gate, and only the rest are embedded.

The threshold is the lowest calibrated gate confidence at which, on the scored labels (out of fold and
held out) whose gate confidence reaches it, the gate makes no more mistakes than the embedding model
made on those very labels, on at least min_support of them; and never below the model's own threshold,
so a gated answer keeps the model's promise (both confidences are calibrated to the chance of being
right) and the runner's threshold check holds unchanged. If no threshold passes, there is no gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from classifiers.selective import NEVER


@dataclass(frozen=True)
class GateChoice:
    """The chosen threshold (NEVER: no gate) and what it was chosen on."""

    threshold: float
    metrics: dict[str, Any]


def choose(
    gate_confidence: np.ndarray,
    gate_right: np.ndarray,
    model_right: np.ndarray,
    *,
    floor: float,
    min_support: int,
) -> GateChoice:
    """The lowest gate threshold >= floor at which the gate errs no more than the model on what it takes."""
    n = len(gate_confidence)
    order = np.argsort(-gate_confidence, kind="stable")
    confidence = gate_confidence[order]
    gate_errors = np.cumsum(~gate_right[order].astype(bool))
    model_errors = np.cumsum(~model_right[order].astype(bool))
    threshold, taken = NEVER, 0
    for k in range(1, n + 1):
        t = float(confidence[k - 1])
        if k < n and confidence[k] == t:
            continue  # a threshold cannot split equal confidences
        if t < floor:
            break
        if k >= min_support and gate_errors[k - 1] <= model_errors[k - 1]:
            threshold, taken = t, k
    metrics: dict[str, Any] = {
        "threshold": threshold,
        "floor": floor,
        "scored": n,
        "scored_share": taken / n if n else 0.0,
        "gate_errors": int(gate_errors[taken - 1]) if taken else 0,
        "model_errors": int(model_errors[taken - 1]) if taken else 0,
    }
    return GateChoice(threshold, metrics)


@dataclass(frozen=True)
class Scores:
    """One candidate's calibrated confidence and correctness on the scored labels, in training order.

    seen: which training labels were scored out of fold (the same folds for every candidate).
    """

    seen: np.ndarray
    oof_confidence: np.ndarray
    oof_right: np.ndarray
    held_confidence: np.ndarray
    held_right: np.ndarray


def choose_between(gate: Scores, model: Scores, *, floor: float, min_support: int) -> GateChoice:
    """choose() on the labels both candidates scored: out of fold where both were, and every held-out one."""
    both = gate.seen & model.seen

    def on_both(s: Scores, values: np.ndarray) -> np.ndarray:
        full = np.zeros(len(s.seen), dtype=values.dtype)
        full[s.seen] = values
        kept: np.ndarray = full[both]
        return kept

    confidence = np.concatenate([on_both(gate, gate.oof_confidence), gate.held_confidence])
    gate_right = np.concatenate([on_both(gate, gate.oof_right), gate.held_right])
    model_right = np.concatenate([on_both(model, model.oof_right), model.held_right])
    return choose(confidence, gate_right, model_right, floor=floor, min_support=min_support)


def same_ngrams(a: Any, b: Any) -> bool:
    """Whether two fitted n-gram unions map every text alike (the same vocabularies and weights)."""
    pairs = zip(a.transformer_list, b.transformer_list, strict=True)
    return all(x.vocabulary_ == y.vocabulary_ and np.array_equal(x.idf_, y.idf_) for (_, x), (_, y) in pairs)
