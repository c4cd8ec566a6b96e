"""The local tier: a linear classifier per taxonomy version, learnt from trusted labels, free to run.

Training: labels are split once and for all by a hash of their text into a training part and a held-out
slice (holdout_fraction), so a label held out from one model is held out from every later one and two
versions can be compared on labels neither saw. Features are TF-IDF word and character n-grams, MiniLM
sentence embeddings, or both; "auto" keeps the best by cross-validated accuracy on the training part.
A logistic regression gives class probabilities; the top one is calibrated to P(correct) by Platt
scaling on out-of-fold predictions.

Threshold rule: the out-of-fold and held-out predictions (none from a model that saw the label) are
sorted by calibrated confidence; the threshold is the lowest confidence at which the answers at or
above it are right with a Wilson lower bound (z=1) of at least target_accuracy, over at least
min_support answers. Where no confidence qualifies, the model answers nothing (threshold NEVER).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy.sparse import csr_matrix, hstack

from classifiers import calibration, embeddings
from classifiers.calibration import Calibrator
from classifiers.cascade import AttemptRecord, Decision, Verdict
from classifiers.costs import Usage, cost_nanousd
from classifiers.packing import DocIn, system_prompt
from classifiers.taxonomy import Taxonomy
from classifiers.tokens import Tokenizer, truncate
from docsort.config import LocalSettings, ModelTier

log = logging.getLogger("docsort.local")
NEVER = 1.000001  # above any calibrated confidence: a model with this threshold answers nothing
FEATURES = ("tfidf", "embeddings", "tfidf+embeddings")
FRAMING_TOKENS = 24  # a document's fence lines and its share of the request's wording
ANSWER_TOKENS = 16  # {"ref": n, "label": "..."} for one document


class NotEnoughLabels(ValueError):
    """Too few labels (or classes) on the training side to fit a classifier."""


class Runner(Protocol):
    """What a tier offers the worker: documents in, one decision each out."""

    def run(self, docs: list[DocIn]) -> list[Decision]: ...


@dataclass(frozen=True)
class TrainParams:
    """How to train and calibrate one model (LocalSettings, less the scheduling)."""

    features: str = "auto"
    holdout_fraction: float = 0.2
    target_accuracy: float = 0.9
    min_support: int = 10
    folds: int = 5
    c: float = 10.0
    embed_backend: str = "onnx"
    embed_max_tokens: int = 128
    seed: int = 0

    @classmethod
    def from_settings(cls, local: LocalSettings) -> TrainParams:
        """The training parameters of settings.local."""
        return cls(
            features=local.features,
            holdout_fraction=local.holdout_fraction,
            target_accuracy=local.target_accuracy,
            min_support=local.min_support,
            embed_backend=local.embed_backend,
            embed_max_tokens=local.embed_max_tokens,
        )


@dataclass(frozen=True)
class Prediction:
    """The top label, its probability and that probability calibrated to P(correct)."""

    label: str
    raw: float
    confidence: float


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


@dataclass
class Features:
    """A fitted feature map; embeddings are computed once per text through a shared cache."""

    kind: str
    embed_backend: str = "onnx"
    embed_max_tokens: int = 128
    vectorizer: Any = None

    def fit(self, texts: Sequence[str]) -> Features:
        """Learn the n-gram vocabulary (embeddings need no fitting)."""
        if "tfidf" in self.kind:
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.pipeline import FeatureUnion

            self.vectorizer = FeatureUnion(
                [
                    ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=50_000)),
                    (
                        "char",
                        TfidfVectorizer(
                            analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, max_features=100_000
                        ),
                    ),
                ]
            ).fit(texts)
            for _, step in self.vectorizer.transformer_list:
                if hasattr(step, "stop_words_"):
                    step.stop_words_ = None  # pruned terms, only for introspection; big when pickled
        return self

    def transform(self, texts: Sequence[str], cache: dict[str, np.ndarray] | None = None) -> csr_matrix:
        """One row of features per text."""
        blocks = []
        if "tfidf" in self.kind:
            blocks.append(self.vectorizer.transform(texts))
        if "embeddings" in self.kind:
            blocks.append(csr_matrix(self.embed(texts, {} if cache is None else cache)))
        return hstack(blocks).tocsr() if len(blocks) > 1 else csr_matrix(blocks[0])

    def embed(self, texts: Sequence[str], cache: dict[str, np.ndarray]) -> np.ndarray:
        """Sentence embeddings of texts, computing only those not in cache."""
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            vectors = embeddings.get_embedder(self.embed_backend, self.embed_max_tokens).embed(missing)
            cache.update(zip(missing, vectors, strict=True))
        return np.vstack([cache[t] for t in texts]) if texts else np.zeros((0, embeddings.DIM))


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

    @classmethod
    def from_folds(cls, features: Features, models: list[Any], calibrator: Calibrator) -> LocalClassifier:
        """Average the folds' logits class by class (a class a fold never saw: over the others)."""
        classes = sorted({str(c) for m in models for c in m.classes_})
        row = {c: i for i, c in enumerate(classes)}
        coef = np.zeros((len(classes), models[0].coef_.shape[1]))
        intercept = np.zeros(len(classes))
        seen = np.zeros(len(classes))
        for model in models:
            index = [row[str(c)] for c in model.classes_]
            weights, bias = model.coef_, model.intercept_
            if len(index) == 2 and weights.shape[0] == 1:  # binary: one logit, as two symmetric ones
                weights, bias = np.vstack([-weights / 2, weights / 2]), np.array([-bias[0] / 2, bias[0] / 2])
            coef[index] += weights
            intercept[index] += bias
            seen[index] += 1
        coef /= np.maximum(seen, 1)[:, None]
        intercept /= np.maximum(seen, 1)
        return cls(features, classes, coef.astype(np.float32), intercept, calibrator, NEVER)

    def proba(self, x: csr_matrix) -> np.ndarray:
        """Class probabilities: the softmax of the averaged logits."""
        logits = np.asarray(x @ self.coef.T) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))

    def predict(self, texts: Sequence[str], cache: dict[str, np.ndarray] | None = None) -> list[Prediction]:
        """The top label of each text with its raw and calibrated confidence."""
        if not texts:
            return []
        proba = self.proba(self.features.transform(texts, cache))
        top = proba.argmax(axis=1)
        raws = proba[np.arange(len(texts)), top]
        return [
            Prediction(self.classes[i], float(raw), self.calibrator(float(raw)))
            for i, raw in zip(top, raws, strict=True)
        ]

    def accuracy(self, texts: Sequence[str], labels: Sequence[str]) -> float:
        """Share of texts whose top label is the given one."""
        if not texts:
            return 0.0
        return float(np.mean([p.label == y for p, y in zip(self.predict(texts), labels, strict=True)]))

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


def wilson_lower(hits: float, n: int, z: float = 1.0) -> float:
    """Lower end of the Wilson score interval for hits right out of n."""
    if n == 0:
        return 0.0
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def choose_threshold(
    confidence: Sequence[float], correct: Sequence[bool], target: float, min_support: int, z: float = 1.0
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


def _cross_fit(x: csr_matrix, y: np.ndarray, params: TrainParams) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """One model per fold, and each label's top probability and correctness from the model without it."""
    from sklearn.model_selection import KFold, StratifiedKFold

    folds = max(2, min(params.folds, len(y)))
    raw = np.full(len(y), np.nan)
    correct = np.zeros(len(y), dtype=bool)
    stratify = max(Counter(y.tolist()).values()) >= folds
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=params.seed)
        if stratify
        else KFold(folds, shuffle=True, random_state=params.seed)
    )
    models = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes: fewer members than folds is expected here
        for fit_idx, test_idx in splitter.split(x, y if stratify else None):
            if len(set(y[fit_idx].tolist())) < 2:
                continue
            model = _logistic(params).fit(x[fit_idx], y[fit_idx])
            proba = model.predict_proba(x[test_idx])
            top = proba.argmax(axis=1)
            raw[test_idx] = proba[np.arange(len(test_idx)), top]
            correct[test_idx] = model.classes_[top] == y[test_idx]
            models.append(model)
    seen = ~np.isnan(raw)
    return models, raw[seen], correct[seen]


def _logistic(params: TrainParams) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=params.c, max_iter=3000)


def train(
    texts: Sequence[str],
    labels: Sequence[str],
    params: TrainParams,
    cache: dict[str, np.ndarray] | None = None,
) -> LocalClassifier:
    """Fit, calibrate and score a model on labelled texts (later duplicates of a text win)."""
    from threadpoolctl import threadpool_limits

    started = time.monotonic()
    latest = dict(zip(texts, labels, strict=True))
    fit_t = [t for t in latest if not in_holdout(t, params.holdout_fraction)]
    hold_t = [t for t in latest if in_holdout(t, params.holdout_fraction)]
    y = np.asarray([latest[t] for t in fit_t], dtype=object)
    hold_y = [latest[t] for t in hold_t]
    if len(fit_t) < 2 or len(set(y.tolist())) < 2:
        raise NotEnoughLabels(f"{len(fit_t)} training labels in {len(set(y.tolist()))} classes")
    cache = {} if cache is None else cache  # text -> embedding, shared by every candidate
    tried: dict[str, float] = {}
    best: tuple[Features, list[Any], np.ndarray, np.ndarray] | None = None
    # One BLAS thread: L-BFGS's small vector steps ran 10x slower with two on a busy 2-core machine.
    with threadpool_limits(1, user_api="blas"):
        for kind in candidates(params):
            features = Features(kind, params.embed_backend, params.embed_max_tokens).fit(fit_t)
            models, raw, correct = _cross_fit(features.transform(fit_t, cache), y, params)
            tried[kind] = float(correct.mean()) if len(correct) else 0.0
            if best is None or tried[kind] > tried[best[0].kind]:  # ties keep the cheaper, earlier kind
                best = (features, models, raw, correct)
    assert best is not None
    features, models, raw, correct = best
    calibrator = calibration.fit(raw.tolist(), correct.tolist(), method="platt")
    model = LocalClassifier.from_folds(features, models, calibrator)
    held = model.predict(hold_t, cache)
    held_ok = [p.label == t for p, t in zip(held, hold_y, strict=True)]
    pooled_conf = [calibrator(float(r)) for r in raw] + [p.confidence for p in held]
    pooled_ok = correct.tolist() + held_ok
    model.threshold = choose_threshold(pooled_conf, pooled_ok, params.target_accuracy, params.min_support)
    answered = [ok for p, ok in zip(held, held_ok, strict=True) if p.confidence >= model.threshold]
    model.metrics = {
        "features": features.kind,
        "candidates": tried,
        "n_train": len(fit_t),
        "n_holdout": len(hold_t),
        "holdout_fraction": params.holdout_fraction,
        "classes": model.classes,
        "oof_accuracy": tried[features.kind],
        "holdout_accuracy": float(np.mean(held_ok)) if held_ok else None,
        "holdout_coverage": len(answered) / len(held) if held else None,
        "holdout_answered_accuracy": float(np.mean(answered)) if answered else None,
        "pooled_coverage": float(np.mean(np.asarray(pooled_conf) >= model.threshold)),
        "target_accuracy": params.target_accuracy,
        "train_seconds": round(time.monotonic() - started, 3),
    }
    return model


def reference_cost(taxonomy: Taxonomy, tier: ModelTier, tokenizer: Tokenizer) -> Callable[[str], int]:
    """What sending a text to tier would cost (nano-USD): its tokens, its share of the prompt, an answer."""
    shared = len(tokenizer.encode(system_prompt(taxonomy))) // tier.batch_size + FRAMING_TOKENS

    def cost(text: str) -> int:
        _, count = truncate(text, tokenizer, tier.doc_token_budget)
        usage = Usage(input_tokens=count + shared, output_tokens=ANSWER_TOKENS)
        return cost_nanousd(usage, tier.price)

    return cost


@dataclass
class LocalRunner:
    """The local tier's pass: answer where the model is sure enough, else hand on; never costs."""

    taxonomy: Taxonomy
    tier: ModelTier
    model: LocalClassifier | None = None
    model_name: str = "local"
    is_last: bool = False
    reference: Callable[[str], int] | None = None

    def run(self, docs: list[DocIn]) -> list[Decision]:
        """One decision per document; untrained or multi-label, every document goes on unrecorded."""
        unsure: Verdict = "review" if self.is_last else "escalate"
        if self.model is None or self.taxonomy.multi_label:
            # No attempt is recorded: an answerless zero-cost row would only skew the cost baseline.
            why = "multi-label taxonomy" if self.taxonomy.multi_label else "no trained model yet"
            return [Decision(doc_id=d.id, verdict=unsure, reason=f"local tier: {why}") for d in docs]
        started = time.monotonic()
        try:
            predictions = self.model.predict([d.text for d in docs])
        except Exception as exc:  # the free tier must never hold the cascade up: hand everything on
            log.exception("local model failed; passing the batch on")
            return [Decision(doc_id=d.id, verdict=unsure, reason=f"local tier: {exc}"[:300]) for d in docs]
        latency_ms = int((time.monotonic() - started) * 1000)
        request_id = f"local-{uuid.uuid4().hex[:16]}"
        threshold = max(self.model.threshold, self.tier.threshold)  # the tier may be stricter, never looser
        known = set(self.taxonomy.label_names)
        decisions = []
        for doc, p in zip(docs, predictions, strict=True):
            sure = p.confidence >= threshold and p.label in known
            attempt = AttemptRecord(
                doc_id=doc.id,
                tier=self.tier.name,
                model=self.model_name,
                request_id=request_id,
                usage=Usage(),
                cost_nanousd=0,
                reference_nanousd=self.reference(doc.text) if self.reference else 0,
                latency_ms=latency_ms,
                outcome="accepted" if sure else ("review" if self.is_last else "escalated"),
                label=p.label,
                confidence=p.confidence,
                raw_confidence=p.raw,
                confidence_method="local_proba",
            )
            verdict: Verdict = "accept" if sure else unsure
            decisions.append(
                Decision(doc.id, verdict, label=p.label, confidence=p.confidence, attempts=[attempt])
            )
        return decisions
