"""Selective answering: the threshold above which a model's answers are reliably right.

Answers from models that never saw their label (out-of-fold or held out) are sorted by calibrated
confidence; the threshold is the lowest confidence at which the answers at or above it are right with a
Wilson lower bound of at least the target, over at least min_support answers. Where no confidence
qualifies, the model answers nothing (threshold NEVER). The local tier uses z = 1.28 (one-sided 90%)
and 20 answers: z = 1 with 10 let lucky folds answer 77-class BANKING77 at 49-86% where 90% was the
target; z = 1.645 cost a third of CFPB's coverage (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

NEVER = 1.000001  # above any calibrated confidence: a model with this threshold answers nothing


def wilson_lower(hits: float, n: int, z: float) -> float:
    """Lower end of the Wilson score interval for hits right out of n."""
    if n == 0:
        return 0.0
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def choose_threshold(
    confidence: Sequence[float], correct: Sequence[bool], target: float, min_support: int, *, z: float
) -> float:
    """The lowest confidence whose answers at or above it reach target (Wilson bound); else NEVER."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    order = np.argsort(-conf, kind="stable")
    conf, hits = conf[order], np.cumsum(ok[order])
    best = NEVER
    for k in range(max(min_support, 1), len(conf) + 1):
        if k < len(conf) and conf[k - 1] == conf[k]:
            continue  # a threshold cannot split equal confidences
        if wilson_lower(float(hits[k - 1]), k, z) >= target:
            best = float(conf[k - 1])
    return best
