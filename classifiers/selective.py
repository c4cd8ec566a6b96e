"""Selective answering: the threshold above which a model's answers are reliably right.

Answers from models that never saw their label (out-of-fold or held out) are sorted by calibrated
confidence; the threshold is the lowest confidence at which the answers at or above it are right with a
Wilson lower bound of at least the target, over at least min_support answers. Where no confidence
qualifies, the model answers nothing (threshold NEVER). The local tier uses z = 1.28 (one-sided 90%)
and 20 answers: z = 1 with 10 let lucky folds answer 77-class BANKING77 at 49-86% where 90% was the
target; z = 1.645 cost a third of CFPB's coverage (docs/benchmarks.md).

Which labels "right" is measured against depends on who gave them (the threshold rule that knows its
teacher, chosen per model by `rule_for`):
- "person_labels": at least min_support answers on labels a person gave (PERSON_ORIGINS) were scored.
  Calibration and threshold use those only; the model still trains on every label.
- "model_labels_vs_teacher": otherwise, on the labels of an LLM tier (the teacher), right with
  probability p. Agreeing with a teacher is not being right: a model right with probability q agrees
  with it with probability a(q) = q·p + (1 - q)·(1 - p)/(K - 1), ASSUMING the teacher's errors are
  independent of the model's and spread evenly over the K - 1 other labels (Teacher.agreement). So the
  threshold is the lowest confidence whose answers agree with the teacher with a Wilson lower bound of
  at least a(target) (a*), and the calibrator maps confidence to P(right) through the same relation
  (`fit_through_teacher`). Multi-label answers are exact label sets: a wrong set is ASSUMED never to be
  the teacher's wrong set, so a(q) = q·p. Errors that model and teacher share (a real LLM's systematic
  confusions, which a model learning from it picks up) make agreement higher than assumed, so the
  rule then answers more, at less than its target: the person labels' rule does not rest on this.
  p is measured where people labelled documents the last tier had accepted
  (store/examples.py::teacher_accuracy), else ASSUMED: the last tier's own `target_accuracy` where set
  (worker/training.py::measured_teacher), else the local target itself (`local.target_accuracy` is
  documented as "set it to the large tier's accuracy"). a* rises with p: a teacher better than assumed
  makes the rule answer below target, a worse one makes it stricter.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from classifiers import calibration
from classifiers.calibration import Calibrator
from core.vocab import PERSON_GIVEN

NEVER = 1.000001  # above any calibrated confidence: a model with this threshold answers nothing

# Labels a person gave one by one (core.vocab.PERSON_GIVEN: uploaded as gold, a document's review).
# Every other origin is model-given, as right as the model that gave it: a tier's name, "audit" (the
# last tier's answer when it audited a lower tier's) and "bulk_accept" (a person accepting a model's
# suggestions in bulk, unread).
PERSON_ORIGINS = frozenset(str(origin) for origin in PERSON_GIVEN)
PERSON_RULE = "person_labels"
TEACHER_RULE = "model_labels_vs_teacher"


def person_given(origin: str) -> bool:
    """Whether a label of this origin was given by a person (see PERSON_ORIGINS)."""
    return origin in PERSON_ORIGINS


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


@dataclass(frozen=True)
class Teacher:
    """The model that gave the model-given labels: its accuracy p, where p came from, and K."""

    accuracy: float
    source: str  # "measured (n=...)" or "assumed: target_accuracy"
    classes: int  # K, the labels a wrong answer spreads over; 0 for exact label sets (multi-label)

    @property
    def chance(self) -> float:
        """P(the teacher gives one particular wrong answer): (1 - p)/(K - 1); 0 for label sets."""
        return (1.0 - self.accuracy) / (self.classes - 1) if self.classes > 1 else 0.0

    @property
    def informative(self) -> bool:
        """Whether agreeing with it says anything about being right (p above the chance rate)."""
        return self.accuracy > self.chance

    def agreement(self, accuracy: float) -> float:
        """How often a model right with this probability agrees with the teacher (module docstring)."""
        return accuracy * self.accuracy + (1.0 - accuracy) * self.chance


def teacher_of(target: float, classes: int, accuracy: float | None, source: str | None) -> Teacher:
    """The teacher as the rule sees it: p as measured (or given), else assumed to be the target."""
    if accuracy is None:
        return Teacher(target, "assumed: target_accuracy", classes)
    return Teacher(accuracy, source or "given", classes)


def rule_for(person_scored: int, min_support: int) -> str:
    """The person labels' rule once min_support answers on person labels were scored, else the teacher's."""
    return PERSON_RULE if person_scored >= max(min_support, 1) else TEACHER_RULE


def fit_through_teacher(
    raw: np.ndarray, agree: np.ndarray, person: np.ndarray, teacher: Teacher
) -> Calibrator:
    """Platt scaling of P(right) fitted on agreement with labels, each as right as its giver.

    P(agree) = c + (p - c)·sigmoid(a·raw + b), with p, c the teacher's accuracy and chance rate for a
    model-given label and 1, 0 for a person's; a and b by maximum likelihood (a faint ridge on a keeps
    it finite). The calibrated confidence is sigmoid(a·raw + b): P(right) under the teacher assumption.
    """
    from scipy.optimize import minimize

    x = np.asarray(raw, dtype=float)
    y = np.asarray(agree, dtype=float)
    if len(x) == 0 or not teacher.informative:
        return Calibrator(method="isotonic", xs=(0.0, 1.0), ys=(0.0, 0.0))
    high = np.where(person, 1.0, teacher.accuracy)
    low = np.where(person, 0.0, teacher.chance)
    start = calibration.fit(x.tolist(), (y > 0).tolist(), method="platt")
    a0, b0 = (start.a, start.b) if start.method == "platt" and start.a > 0 else (1.0, 0.0)
    ridge = 1e-4

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        s = 1.0 / (1.0 + np.exp(-np.clip(theta[0] * x + theta[1], -35, 35)))
        m = np.clip(low + (high - low) * s, 1e-12, 1 - 1e-12)
        value = -np.sum(y * np.log(m) + (1 - y) * np.log(1 - m)) + ridge * theta[0] ** 2
        dz = -(y / m - (1 - y) / (1 - m)) * (high - low) * s * (1 - s)
        grad = np.array([np.sum(dz * x) + 2 * ridge * theta[0], np.sum(dz)])
        return float(value), grad

    found = minimize(loss, np.array([a0, b0]), jac=True, method="L-BFGS-B")
    return Calibrator(method="platt", a=float(found.x[0]), b=float(found.x[1]))


def teacher_threshold(
    confidence: Sequence[float],
    agree: Sequence[bool],
    target: float,
    min_support: int,
    teacher: Teacher,
    *,
    z: float,
) -> float:
    """The threshold on model-given labels: answers at or above it agree with the teacher >= a*."""
    if not teacher.informative:
        return NEVER
    return choose_threshold(confidence, agree, teacher.agreement(target), min_support, z=z)


@dataclass(frozen=True)
class Scored:
    """Answers of models that never saw their label: raw confidence, right, and a person's label or not."""

    raw: np.ndarray
    ok: np.ndarray
    person: np.ndarray


@dataclass(frozen=True)
class Selection:
    """What the rule chose: the calibrator, the threshold, and the share of scored answers it answers."""

    rule: str
    calibrator: Calibrator
    threshold: float
    coverage: float
    scored: dict[str, int]  # answers scored on person and on model labels


def select(
    oof: Scored, held: Scored, target: float, min_support: int, teacher: Teacher, *, z: float
) -> Selection:
    """Calibrate on out-of-fold answers and choose the threshold on them and the held-out ones, by rule.

    With every label a person's this is the rule as it was before sources: Platt on every out-of-fold
    answer, the threshold on every answer.
    """
    person = np.concatenate([oof.person, held.person]).astype(bool)
    ok = np.concatenate([oof.ok, held.ok]).astype(bool)
    rule = rule_for(int(person.sum()), min_support)
    if rule == PERSON_RULE:
        calibrator = calibration.fit(
            oof.raw[oof.person].tolist(), oof.ok[oof.person].tolist(), method="platt"
        )
    else:
        calibrator = fit_through_teacher(oof.raw, oof.ok, oof.person, teacher)
    conf = np.asarray([calibrator(float(r)) for r in np.concatenate([oof.raw, held.raw])])
    if rule == PERSON_RULE:
        threshold = choose_threshold(conf[person], ok[person], target, min_support, z=z)
    else:
        threshold = teacher_threshold(conf[~person], ok[~person], target, min_support, teacher, z=z)
    coverage = float(np.mean(conf >= threshold)) if len(conf) else 0.0
    scored = {"person": int(person.sum()), "model": int((~person).sum())}
    return Selection(rule, calibrator, threshold, coverage, scored)


def rule_metrics(
    selection: Selection, origins: Sequence[str], teacher: Teacher, target: float
) -> dict[str, Any]:
    """What a model's metrics say of its threshold rule: which, on which labels, against which teacher."""
    return {
        "rule": selection.rule,
        "by_source": dict(sorted(Counter(origins).items())),
        "person_labels": sum(person_given(o) for o in origins),
        "model_labels": sum(not person_given(o) for o in origins),
        "scored": selection.scored,
        "teacher_accuracy": teacher.accuracy,
        "teacher_accuracy_source": teacher.source,
        "teacher_classes": teacher.classes,
        "agreement_target": None if selection.rule == PERSON_RULE else teacher.agreement(target),
    }
