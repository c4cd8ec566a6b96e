"""Linear layers for the local tier: fitting them (one multinomial, or one binary per label) and answering.

A single-label answer is the top class, its raw confidence that class's probability. A multi-label answer
is every label at probability 0.5 or more (possibly none: the likeliest set when labels are independent),
its raw confidence the probability of exactly that set.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix, vstack

Label = str | tuple[str, ...]  # a single-label answer, or a multi-label one as a sorted tuple


def as_label(value: str | Sequence[str]) -> Label:
    """A stored label (a string, or a list for multi-label) in the form answers are compared in."""
    return value if isinstance(value, str) else tuple(sorted(set(value)))


@dataclass
class Linear:
    """One linear layer: a row of weights and a bias per class (or per label, for multi-label)."""

    classes: list[str]
    coef: np.ndarray
    intercept: np.ndarray


def proba(layer: Linear, x: csr_matrix, multi_label: bool) -> np.ndarray:
    """Class probabilities (softmax), or each label's own probability (sigmoid) for multi-label."""
    logits = np.asarray(x @ layer.coef.T) + layer.intercept
    if multi_label:
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30))))
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def decide(proba: np.ndarray, classes: Sequence[str], multi_label: bool) -> tuple[list[Label], np.ndarray]:
    """Each row's answer and its raw confidence (see the module docstring)."""
    if not multi_label:
        top = proba.argmax(axis=1)
        return [classes[i] for i in top], proba[np.arange(len(proba)), top]
    chosen = proba >= 0.5  # the likeliest set when labels are independent; it may be empty
    raw = np.where(chosen, proba, 1.0 - proba).prod(axis=1)
    return [tuple(sorted(classes[int(j)] for j in np.flatnonzero(row))) for row in chosen], raw


def fit_single(x: csr_matrix, y: np.ndarray, c: float) -> Linear:
    """A multinomial logistic regression; a binary one's single logit becomes two symmetric ones."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=3000).fit(x, y)
    weights, bias = model.coef_, model.intercept_
    if weights.shape[0] == 1:
        weights, bias = np.vstack([-weights / 2, weights / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    return Linear([str(k) for k in model.classes_], weights, bias)


def fit_multi(x: csr_matrix, y: np.ndarray, names: list[str], c: float) -> Linear:
    """One binary logistic regression per label; a label always (never) present gets only a bias."""
    from sklearn.linear_model import LogisticRegression

    coef = np.zeros((len(names), x.shape[1]))
    intercept = np.zeros(len(names))
    for j, name in enumerate(names):
        target = np.fromiter((name in labels for labels in y), dtype=bool, count=len(y))
        positives = int(target.sum())
        if 0 < positives < len(y):
            model = LogisticRegression(C=c, solver="liblinear").fit(x, target)
            coef[j], intercept[j] = model.coef_[0], model.intercept_[0]
        else:  # smoothed log-odds of how often it was present
            rate = (positives + 0.5) / (len(y) + 1)
            intercept[j] = np.log(rate / (1 - rate))
    return Linear(names, coef, intercept)


def cross_fit(
    x: csr_matrix,
    y: np.ndarray,
    n_folds: int,
    c: float,
    seed: int,
    multi_label: bool,
    prior: tuple[csr_matrix, np.ndarray] | None = None,
) -> tuple[list[Linear], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One layer per fold, and each label's raw confidence, correctness and answer from the layer without it.

    Also which labels got an answer (seen): a fold whose training side has one class is skipped.

    prior: extra examples (the label names) on every fold's training side; never scored.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    folds = max(2, min(n_folds, len(y)))
    raw = np.full(len(y), np.nan)
    correct = np.zeros(len(y), dtype=bool)
    answer = np.empty(len(y), dtype=object)
    stratify = not multi_label and max(Counter(y.tolist()).values()) >= folds
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if stratify
        else KFold(folds, shuffle=True, random_state=seed)
    )
    names = sorted({name for labels in y for name in labels}) if multi_label else []
    layers = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes: fewer members than folds is expected here
        for fit_idx, test_idx in splitter.split(x, y if stratify else None):
            fit_x, fit_y = x[fit_idx], y[fit_idx]
            if prior is not None:
                fit_x, fit_y = vstack([fit_x, prior[0]]).tocsr(), np.concatenate([fit_y, prior[1]])
            if multi_label:
                layer = fit_multi(fit_x, fit_y, names, c)
            elif len(set(fit_y.tolist())) >= 2:
                layer = fit_single(fit_x, fit_y, c)
            else:
                continue
            answers, raws = decide(proba(layer, x[test_idx], multi_label), layer.classes, multi_label)
            raw[test_idx] = raws
            answer[test_idx] = answers
            correct[test_idx] = [a == t for a, t in zip(answers, y[test_idx], strict=True)]
            layers.append(layer)
    seen = ~np.isnan(raw)
    return layers, raw[seen], correct[seen], seen, answer[seen]
