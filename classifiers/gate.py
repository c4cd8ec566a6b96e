"""The local tier's gate: a cheap model (TF-IDF) that answers before the embedding model is run.

Embedding a text with MiniLM costs ~100x a TF-IDF transform, and bounds the default cascade
(docs/benchmarks.md). Where the TF-IDF candidate is sure, it mostly gives the embedding model's own
answer, so a trained model keeps the TF-IDF candidate as its gate, with a threshold of its own: a text
whose gate confidence reaches it is answered by the gate, and only the rest are embedded.

The threshold is the lowest calibrated gate confidence at which, on the scored labels (out of fold and
held out) whose gate confidence reaches it, at least min_support of them:
- the gate gave the embedding model's answer nearly always: the upper end of the 1 - z Wilson interval
  of their disagreement is at most MAX_DISAGREEMENT, which bounds what the gate can cost the answers it
  takes, whatever the labels say;
- and it made no more mistakes than the embedding model on those very labels;
and it is never below the model's own threshold, so a gated answer keeps the model's promise (both
confidences are calibrated to the chance of being right) and the runner's threshold check holds
unchanged. If no threshold passes, there is no gate. (Comparing mistakes alone, without the agreement
bound, cost 1.2-1.9 points of answered accuracy on the dev sets: docs/benchmarks.md.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from classifiers.selective import NEVER, wilson_lower

MAX_DISAGREEMENT = 0.02


@dataclass(frozen=True)
class GateChoice:
    """The chosen threshold (NEVER: no gate) and what it was chosen on."""

    threshold: float
    metrics: dict[str, Any]


def choose(
    gate_confidence: np.ndarray,
    gate_right: np.ndarray,
    model_right: np.ndarray,
    agree: np.ndarray,
    *,
    floor: float,
    min_support: int,
    z: float,
    max_disagreement: float = MAX_DISAGREEMENT,
) -> GateChoice:
    """The lowest gate threshold >= floor at which the gate agrees with the model and errs no more."""
    n = len(gate_confidence)
    order = np.argsort(-gate_confidence, kind="stable")
    confidence = gate_confidence[order]
    gate_errors = np.cumsum(~gate_right[order].astype(bool))
    model_errors = np.cumsum(~model_right[order].astype(bool))
    agreements = np.cumsum(agree[order].astype(bool))
    threshold, taken = NEVER, 0
    for k in range(1, n + 1):
        t = float(confidence[k - 1])
        if k < n and confidence[k] == t:
            continue  # a threshold cannot split equal confidences
        if t < floor:
            break
        disagreement = 1.0 - wilson_lower(float(agreements[k - 1]), k, z)  # its upper bound
        if (
            k >= min_support
            and disagreement <= max_disagreement
            and gate_errors[k - 1] <= model_errors[k - 1]
        ):
            threshold, taken = t, k
    metrics: dict[str, Any] = {
        "threshold": threshold,
        "floor": floor,
        "scored": n,
        "scored_share": taken / n if n else 0.0,
        "gate_errors": int(gate_errors[taken - 1]) if taken else 0,
        "model_errors": int(model_errors[taken - 1]) if taken else 0,
        "disagreements": int(taken - agreements[taken - 1]) if taken else 0,
        "max_disagreement": max_disagreement,
    }
    return GateChoice(threshold, metrics)


@dataclass(frozen=True)
class Scores:
    """One candidate's calibrated confidence, correctness and answer on the scored labels, in training order.

    seen: which training labels were scored out of fold (the same folds for every candidate).
    """

    seen: np.ndarray
    oof_confidence: np.ndarray
    oof_right: np.ndarray
    held_confidence: np.ndarray
    held_right: np.ndarray
    oof_answer: np.ndarray
    held_answer: np.ndarray


def choose_between(gate: Scores, model: Scores, *, floor: float, min_support: int, z: float) -> GateChoice:
    """choose() on the labels both candidates scored: out of fold where both were, and every held-out one."""
    both = gate.seen & model.seen

    def on_both(s: Scores, values: np.ndarray) -> np.ndarray:
        full = np.zeros(len(s.seen), dtype=values.dtype)
        full[s.seen] = values
        kept: np.ndarray = full[both]
        return kept

    gate_answers = np.concatenate([on_both(gate, gate.oof_answer), gate.held_answer])
    model_answers = np.concatenate([on_both(model, model.oof_answer), model.held_answer])
    return choose(
        np.concatenate([on_both(gate, gate.oof_confidence), gate.held_confidence]),
        np.concatenate([on_both(gate, gate.oof_right), gate.held_right]),
        np.concatenate([on_both(model, model.oof_right), model.held_right]),
        np.asarray([a == b for a, b in zip(gate_answers, model_answers, strict=True)], dtype=bool),
        floor=floor,
        min_support=min_support,
        z=z,
    )


def same_ngrams(a: Any, b: Any) -> bool:
    """Whether two fitted n-gram unions map every text alike (the same vocabularies and weights)."""
    pairs = zip(a.transformer_list, b.transformer_list, strict=True)
    return all(x.vocabulary_ == y.vocabulary_ and np.array_equal(x.idf_, y.idf_) for (_, x), (_, y) in pairs)
