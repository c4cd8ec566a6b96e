"""Calibrating raw confidences to P(correct), and choosing the cheapest threshold that keeps accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Method = Literal["isotonic", "platt"]


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw confidence to the probability of being right."""

    method: Method
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()
    a: float = 0.0
    b: float = 0.0

    def __call__(self, raw: float) -> float:
        if self.method == "isotonic":
            return float(np.interp(raw, self.xs, self.ys))
        return float(1.0 / (1.0 + np.exp(-(self.a * raw + self.b))))

    @property
    def params(self) -> dict[str, Any]:
        """What is stored to rebuild it."""
        return {
            "method": self.method,
            "xs": list(self.xs),
            "ys": list(self.ys),
            "a": self.a,
            "b": self.b,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Calibrator:
        """Rebuild a stored calibrator."""
        return cls(
            method=params["method"],
            xs=tuple(params.get("xs", ())),
            ys=tuple(params.get("ys", ())),
            a=float(params.get("a", 0.0)),
            b=float(params.get("b", 0.0)),
        )


def fit(raw: Sequence[float], correct: Sequence[bool], method: Method = "isotonic") -> Calibrator:
    """Fit a calibrator on raw confidences and whether each answer was right."""
    x = np.asarray(raw, dtype=float)
    y = np.asarray(correct, dtype=float)
    if len(x) == 0 or len(set(y.tolist())) < 2:
        rate = float(y.mean()) if len(y) else 0.0
        return Calibrator(method="isotonic", xs=(0.0, 1.0), ys=(rate, rate))
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y)
        return Calibrator(
            method="isotonic",
            xs=tuple(float(v) for v in iso.X_thresholds_),
            ys=tuple(float(v) for v in iso.y_thresholds_),
        )
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e4).fit(x.reshape(-1, 1), y)
    return Calibrator(method="platt", a=float(lr.coef_[0][0]), b=float(lr.intercept_[0]))


@dataclass(frozen=True)
class CascadePoint:
    """The two-tier cascade at one threshold."""

    threshold: float
    accuracy: float
    cost: float
    escalation_rate: float


def sweep(
    confidence: Sequence[float],
    small_correct: Sequence[bool],
    large_correct: Sequence[bool],
    small_cost: Sequence[float],
    large_cost: Sequence[float],
) -> list[CascadePoint]:
    """Accuracy and cost of escalating every document whose confidence is below each threshold."""
    conf = np.asarray(confidence, dtype=float)
    sc = np.asarray(small_correct, dtype=bool)
    lc = np.asarray(large_correct, dtype=bool)
    s_cost = np.asarray(small_cost, dtype=float)
    l_cost = np.asarray(large_cost, dtype=float)
    thresholds = sorted({0.0, *conf.tolist(), 1.000001})
    points = []
    for t in thresholds:
        up = conf < t
        accuracy = float(np.where(up, lc, sc).mean()) if len(conf) else 0.0
        cost = float(s_cost.sum() + l_cost[up].sum())
        points.append(CascadePoint(t, accuracy, cost, float(up.mean()) if len(conf) else 0.0))
    return points


def choose_threshold(
    points: Sequence[CascadePoint], large_accuracy: float, target_gap: float
) -> CascadePoint:
    """The cheapest point whose accuracy is within target_gap of large-only (else the most accurate)."""
    good = [p for p in points if p.accuracy >= large_accuracy - target_gap]
    if good:
        return min(good, key=lambda p: (p.cost, -p.accuracy))
    return max(points, key=lambda p: (p.accuracy, -p.cost))


def auroc(scores: Sequence[float], correct: Sequence[bool]) -> float | None:
    """How well scores rank right answers above wrong ones (None without both kinds)."""
    y = np.asarray(correct, dtype=bool)
    if y.all() or not y.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, np.asarray(scores, dtype=float)))
