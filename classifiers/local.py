"""The local tier: a linear classifier per taxonomy version, learnt from trusted labels, free to run.

Training: labels are split once and for all by a hash of their text into a training part and a held-out
slice (holdout_fraction), so a label held out from one model is held out from every later one and two
versions can be compared on labels neither saw. Features (classifiers/features.py) are TF-IDF n-grams,
sentence embeddings, or both; under "auto" every kind is a candidate, embeddings at each of embed_scales
(unit vectors x10 regularise their weights 100x less: with 77 classes and 5 labels each, unit vectors
gave near-flat probabilities). Each candidate is trained, calibrated and given its threshold, and the one
that answers the largest share of the out-of-fold and held-out labels wins (then the more accurate).
In single-label taxonomies each class's name is one more training example (a prior that matters when
labels per class are few: docs/benchmarks.md).

Single-label taxonomies get a multinomial logistic regression, multi-label ones one binary regression per
label (classifiers/linear.py says how each answers). Either way an answer is right only if it is exactly
the true label (or label set); its raw confidence is calibrated to that by Platt scaling on out-of-fold
answers, and the threshold follows classifiers/selective.py.

Each label has a source (its Example origin): a person's (gold, review) or a model's (an LLM tier's
name, audit, bulk_accept). The model trains on every label, but calibration and threshold are set on
person labels when at least min_support of them were scored out of fold or held out ("person_labels");
otherwise on model labels, against the agreement a model of the target accuracy would have with a
teacher of accuracy p ("model_labels_vs_teacher"): p measured (store/examples.py::teacher_accuracy) or,
unmeasured, assumed (the last tier's target_accuracy, else `local.target_accuracy`, which is meant to be
set to the large tier's accuracy).
metrics["threshold_rule"] says which rule chose, on how many labels of each source, and p.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from classifiers import calibration, embeddings, gate, linear
from classifiers.calibration import Calibrator
from classifiers.features import FEATURES, Features
from classifiers.linear import Label, Linear, as_label, decide
from classifiers.selective import (
    NEVER,
    Scored,
    Selection,
    Teacher,
    choose_threshold,
    person_given,
    rule_metrics,
    select,
    teacher_of,
    wilson_lower,
)
from core.config import LocalSettings

__all__ = [
    "NEVER",
    "Features",
    "Label",
    "LocalClassifier",
    "Teacher",
    "as_label",
    "choose_threshold",
    "train",
    "wilson_lower",
]


class NotEnoughLabels(ValueError):
    """Too few labels (or classes) on the training side to fit a classifier."""


@dataclass(frozen=True)
class TrainParams:
    """How to train and calibrate one model (LocalSettings, less the scheduling)."""

    features: str = "auto"
    holdout_fraction: float = 0.2
    target_accuracy: float = 0.9
    min_support: int = 20
    z: float = 1.28  # the threshold rule's one-sided bound: 90%
    folds: int = 5
    c: float = 10.0
    embed_scales: tuple[float, ...] = (1.0, 10.0)  # embeddings at each scale: one candidate each
    # Single-label: each class's name ("card_arrival" -> "card arrival") as one more example.
    label_prior: bool = True
    embed_backend: str = "onnx-q8"
    embed_max_tokens: int = 128
    gate: bool = True  # the TF-IDF candidate answers first where it may (classifiers/gate.py)
    seed: int = 0

    @classmethod
    def from_settings(cls, local: LocalSettings) -> TrainParams:
        """The training parameters of settings.local."""
        return cls(
            features=local.features,
            holdout_fraction=local.holdout_fraction,
            target_accuracy=local.target_accuracy,
            min_support=local.min_support,
            z=local.confidence_z,
            embed_backend=local.embed_backend,
            embed_max_tokens=local.embed_max_tokens,
            gate=local.gate,
        )


@dataclass(frozen=True)
class Prediction:
    """The answer (a label, or labels for a multi-label model), its raw and calibrated confidence."""

    label: str | None
    raw: float
    confidence: float
    labels: tuple[str, ...] | None = None
    gated: bool = False  # answered by the model's gate, without embeddings

    @property
    def answer(self) -> Label:
        """What is compared with a true label: the label, or the sorted tuple of labels."""
        return self.labels if self.labels is not None else str(self.label)


def in_holdout(text: str, fraction: float) -> bool:
    """Whether a labelled text is in the held-out slice; fixed by its hash, so it never moves."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def candidates(params: TrainParams) -> list[str]:
    """The feature kinds to try: the one asked for, or under auto every one installed."""
    if params.features != "auto":
        return [params.features]
    if embeddings.available(params.embed_backend):
        return list(FEATURES)
    return ["tfidf"]


def label_text(label: str) -> str:
    """A label's name as a text to learn from ("card_arrival" -> "card arrival")."""
    return label.replace("_", " ").strip() or label


@dataclass
class LocalClassifier:
    """A trained local model: features, one linear layer, calibration and threshold.

    The layer is the mean of the cross-validation folds' regressions, not a refit on every label: the
    folds' out-of-fold answers set the calibration and the threshold, and a refit is surer of itself
    than those answers show, so it answered too much (measured: docs/benchmarks.md).
    """

    features: Features
    classes: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    calibrator: Calibrator
    threshold: float
    metrics: dict[str, Any] = field(default_factory=dict)
    multi_label: bool = False
    # A cheaper model answering first where it is sure (classifiers/gate.py); None in older files.
    gate: LocalClassifier | None = None
    gate_threshold: float = NEVER

    @classmethod
    def from_folds(
        cls, features: Features, folds: list[Linear], calibrator: Calibrator, multi_label: bool = False
    ) -> LocalClassifier:
        """Average the folds' weights class by class (a class a fold never saw: over the others)."""
        classes = sorted({c for layer in folds for c in layer.classes})
        row = {c: i for i, c in enumerate(classes)}
        coef = np.zeros((len(classes), folds[0].coef.shape[1]))
        intercept = np.zeros(len(classes))
        seen = np.zeros(len(classes))
        for layer in folds:
            index = [row[c] for c in layer.classes]
            coef[index] += layer.coef
            intercept[index] += layer.intercept
            seen[index] += 1
        coef /= np.maximum(seen, 1)[:, None]
        intercept /= np.maximum(seen, 1)
        return cls(features, classes, coef.astype(np.float32), intercept, calibrator, NEVER, {}, multi_label)

    def proba(self, x: csr_matrix) -> np.ndarray:
        """Class probabilities, or label probabilities for a multi-label model."""
        return linear.proba(Linear(self.classes, self.coef, self.intercept), x, self.multi_label)

    def predict(self, texts: Sequence[str], cache: dict[str, np.ndarray] | None = None) -> list[Prediction]:
        """The answer for each text with its raw and calibrated confidence (the gate's where it is sure)."""
        if not texts:
            return []
        if self.gate is None:
            return self.answers(self.features.transform(texts, cache))
        ngrams = self.gate.features.transform(texts)
        out: list[Prediction | None] = [
            replace(p, gated=True) if p.confidence >= self.gate_threshold else None
            for p in self.gate.answers(ngrams)
        ]
        rest = [i for i, p in enumerate(out) if p is None]
        if rest:
            # The gate's n-grams are this model's own where both were fitted on the same texts.
            shared = ngrams[rest] if self.gate.features.vectorizer is self.features.vectorizer else None
            x = self.features.transform([texts[i] for i in rest], cache, tfidf=shared)
            for i, p in zip(rest, self.answers(x), strict=True):
                out[i] = p
        return [p for p in out if p is not None]

    def answers(self, x: csr_matrix) -> list[Prediction]:
        """The answer for each row of features with its raw and calibrated confidence."""
        answers, raws = decide(self.proba(x), self.classes, self.multi_label)
        return [
            Prediction(
                None if isinstance(a, tuple) else a,
                float(raw),
                self.calibrator(float(raw)),
                a if isinstance(a, tuple) else None,
            )
            for a, raw in zip(answers, raws, strict=True)
        ]

    def accuracy(
        self, texts: Sequence[str], labels: Sequence[Label], cache: dict[str, np.ndarray] | None = None
    ) -> float:
        """Share of texts whose answer is exactly the given label (or label set)."""
        if not texts:
            return 0.0
        predictions = self.predict(texts, cache)
        return float(np.mean([p.answer == y for p, y in zip(predictions, labels, strict=True)]))

    def save(self, path: Path) -> None:
        """Write to path atomically (a worker may be loading the previous file)."""
        import joblib

        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{uuid.uuid4().hex[:8]}.partial")
        joblib.dump(self, partial, compress=3)
        os.replace(partial, path)

    @staticmethod
    def load(path: Path) -> LocalClassifier:
        """A model saved by save (our own files only: joblib runs pickles)."""
        import joblib

        model = joblib.load(path)
        if not isinstance(model, LocalClassifier):
            raise TypeError(f"{path} does not hold a LocalClassifier")
        return model


@dataclass
class _Split:
    """Whether a person gave each training label; the held-out texts, their labels, and the same."""

    fit_person: np.ndarray
    hold_t: list[str]
    hold_y: list[Label]
    hold_person: np.ndarray


def _calibrated(
    features: Features,
    layers: list[Linear],
    oof: Scored,
    split: _Split,
    params: TrainParams,
    teacher: Teacher,
    cache: dict[str, np.ndarray],
    multi_label: bool,
) -> tuple[LocalClassifier, list[Prediction], list[bool], Selection]:
    """One candidate's deployed model with its calibrator and threshold, and its held-out answers."""
    model = LocalClassifier.from_folds(features, layers, calibration.fit([], []), multi_label)
    held = model.predict(split.hold_t, cache)  # raw confidences; calibrated below
    held_ok = [p.answer == t for p, t in zip(held, split.hold_y, strict=True)]
    scored = Scored(np.asarray([p.raw for p in held]), np.asarray(held_ok, dtype=bool), split.hold_person)
    chosen = select(oof, scored, params.target_accuracy, params.min_support, teacher, z=params.z)
    model.calibrator, model.threshold = chosen.calibrator, chosen.threshold
    held = [replace(p, confidence=chosen.calibrator(p.raw)) for p in held]
    model.metrics = {"pooled_coverage": chosen.coverage}
    return model, held, held_ok, chosen


def train(
    texts: Sequence[str],
    labels: Sequence[str | Sequence[str]],
    params: TrainParams,
    cache: dict[str, np.ndarray] | None = None,
    *,
    sources: Sequence[str] | None = None,
    teacher_accuracy: float | None = None,
    teacher_accuracy_source: str | None = None,
) -> LocalClassifier:
    """Fit, calibrate and score a model on labelled texts (later duplicates of a text win).

    A label is a string, or for a multi-label taxonomy a list of labels; all must be of one kind.
    sources: each label's origin ("gold", "review": a person's; a tier's name, "audit", "bulk_accept" or
    anything else: a model's); None: every label is a person's, as before sources were known. teacher_accuracy: the
    model labels' measured accuracy p, and teacher_accuracy_source where it came from; None: assumed
    to be params.target_accuracy. See the module docstring for the threshold rule they choose.
    """
    from threadpoolctl import threadpool_limits

    started = time.monotonic()
    origins = ["gold"] * len(texts) if sources is None else list(sources)
    if len(origins) != len(texts):
        raise ValueError(f"{len(origins)} sources for {len(texts)} labels")
    latest = {t: (as_label(y), o) for t, y, o in zip(texts, labels, origins, strict=True)}
    kinds = {type(y) for y, _ in latest.values()}
    if len(kinds) > 1:
        raise ValueError("labels mix single labels and label lists")
    multi_label = kinds == {tuple}
    fit_t = [t for t in latest if not in_holdout(t, params.holdout_fraction)]
    hold_t = [t for t in latest if in_holdout(t, params.holdout_fraction)]
    y = np.empty(len(fit_t), dtype=object)
    y[:] = [latest[t][0] for t in fit_t]  # element by element: tuples would otherwise make a 2-D array
    split = _Split(
        np.asarray([person_given(latest[t][1]) for t in fit_t], dtype=bool),
        hold_t,
        [latest[t][0] for t in hold_t],
        np.asarray([person_given(latest[t][1]) for t in hold_t], dtype=bool),
    )
    names = {n for a in y for n in a} if multi_label else set(y.tolist())
    if len(fit_t) < 2 or len(names) < 2:
        raise NotEnoughLabels(f"{len(fit_t)} training labels in {len(names)} classes")
    # K: the classes among the labels (fewer than the taxonomy's make a* higher: stricter); 0 for sets.
    every = {n for a, _ in latest.values() for n in ([a] if isinstance(a, str) else a)}
    teacher = teacher_of(
        params.target_accuracy, 0 if multi_label else len(every), teacher_accuracy, teacher_accuracy_source
    )
    cache = {} if cache is None else cache  # text -> embedding, shared by every candidate
    prior_labels = sorted(names) if params.label_prior and not multi_label else []
    prior_y = np.asarray(prior_labels, dtype=object)
    accuracy: dict[str, float] = {}
    scores: dict[str, gate.Scores] = {}  # each candidate's, for the gate's threshold
    cheap: LocalClassifier | None = None  # the TF-IDF candidate: the gate, if the winner embeds
    coverage: dict[str, float] = {}
    best: tuple[LocalClassifier, list[Prediction], list[bool], Selection] | None = None
    # One BLAS thread: L-BFGS's small vector steps ran 10x slower with two on a busy 2-core machine.
    with threadpool_limits(1, user_api="blas"):
        for kind in candidates(params):
            fitted = Features(kind, params.embed_backend, params.embed_max_tokens).fit(fit_t)
            for scale in params.embed_scales if "embeddings" in kind else (1.0,):
                features = replace(fitted, embed_scale=scale)
                x = features.transform(fit_t, cache)
                prior = None
                if prior_labels:
                    prior = (features.transform([label_text(c) for c in prior_labels], cache), prior_y)
                layers, raw, correct, seen, answers = linear.cross_fit(
                    x, y, params.folds, params.c, params.seed, multi_label, prior
                )
                oof = Scored(raw, correct, split.fit_person[seen])
                chosen = _calibrated(features, layers, oof, split, params, teacher, cache, multi_label)
                model = chosen[0]
                if kind == "tfidf":
                    cheap = model
                held_answers = np.empty(len(chosen[1]), dtype=object)
                held_answers[:] = [p.answer for p in chosen[1]]  # one by one: tuples stay elements
                scores[features.name] = gate.Scores(
                    seen,
                    np.asarray([model.calibrator(float(r)) for r in raw]),
                    correct,
                    np.asarray([p.confidence for p in chosen[1]]),
                    np.asarray(chosen[2], dtype=bool),
                    answers,
                    held_answers,
                )
                accuracy[features.name] = float(correct.mean()) if len(correct) else 0.0
                coverage[features.name] = model.metrics["pooled_coverage"]
                # The most answered under the threshold rule, then the most accurate; ties: the earlier.
                if best is None or (coverage[features.name], accuracy[features.name]) > (
                    coverage[best[0].features.name],
                    accuracy[best[0].features.name],
                ):
                    best = chosen
    assert best is not None
    model, held, held_ok, selection = best
    features = model.features
    gated: dict[str, Any] | None = None
    if params.gate and "embeddings" in features.kind and cheap is not None:
        gated = _attach_gate(
            model, cheap, scores[cheap.features.name], scores[features.name], params.min_support, params.z
        )
        if model.gate is not None:  # the held-out answers as the gated model gives them
            held = model.predict(split.hold_t, cache)
            held_ok = [p.answer == t for p, t in zip(held, split.hold_y, strict=True)]
    answered = [ok for p, ok in zip(held, held_ok, strict=True) if p.confidence >= model.threshold]
    model.metrics = {
        "features": features.kind,
        "embed_scale": features.embed_scale,
        "candidates": accuracy,
        "candidate_coverage": coverage,
        "label_prior": bool(prior_labels),
        "multi_label": multi_label,
        "n_train": len(fit_t),
        "n_holdout": len(hold_t),
        "holdout_fraction": params.holdout_fraction,
        "classes": model.classes,
        "oof_accuracy": accuracy[features.name],
        "holdout_accuracy": float(np.mean(held_ok)) if held_ok else None,
        "holdout_coverage": len(answered) / len(held) if held else None,
        "holdout_answered_accuracy": float(np.mean(answered)) if answered else None,
        "pooled_coverage": coverage[features.name],
        "target_accuracy": params.target_accuracy,
        "threshold_rule": rule_metrics(
            selection, [o for _, o in latest.values()], teacher, params.target_accuracy
        ),
        "train_seconds": round(time.monotonic() - started, 3),
        "gate": gated,
    }
    return model


def _attach_gate(
    model: LocalClassifier,
    cheap: LocalClassifier,
    cheap_scores: gate.Scores,
    scores: gate.Scores,
    min_support: int,
    z: float,
) -> dict[str, Any]:
    """Give model the cheap candidate as its gate where a threshold passes (classifiers/gate.py)."""
    choice = gate.choose_between(cheap_scores, scores, floor=model.threshold, min_support=min_support, z=z)
    metrics = {"features": cheap.features.name, **choice.metrics}
    if choice.threshold >= NEVER:
        return metrics
    if model.features.vectorizer is not None and gate.same_ngrams(
        model.features.vectorizer, cheap.features.vectorizer
    ):
        cheap.features.vectorizer = model.features.vectorizer  # one copy in the file, one transform per text
    model.gate, model.gate_threshold = cheap, choice.threshold
    return metrics
