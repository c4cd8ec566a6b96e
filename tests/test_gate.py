"""The local tier's gate: TF-IDF answers first where it errs no more than the embedding model.

The threshold rule on hand-made scores, then a model trained with embeddings on real AG News labels:
the texts the gate answers are never embedded, and every answer is the gate's or the ungated model's.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from classifiers import embeddings, gate
from classifiers.local import NEVER, LocalClassifier, TrainParams, train
from classifiers.local_runner import LocalRunner
from classifiers.packing import DocIn
from classifiers.taxonomy import from_dataset_labels
from core.tiers import local_tier
from tests.conftest import dataset


def test_the_threshold_is_the_lowest_where_the_gate_agrees_and_errs_no_more_than_the_model() -> None:
    # Sorted by the gate's confidence: the gate errs at the 4th and 6th labels, the model at the 5th.
    confidence = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93])
    gate_right = np.array([1, 1, 1, 0, 1, 0, 1], dtype=bool)
    model_right = np.array([1, 1, 1, 1, 0, 1, 1], dtype=bool)
    agree = np.array([1, 1, 1, 0, 0, 0, 1], dtype=bool)
    loose = {"min_support": 1, "z": 1.28, "max_disagreement": 1.0}  # errors alone decide
    choice = gate.choose(confidence, gate_right, model_right, agree, floor=0.5, **loose)
    # Top 5: one error each; top 6: the gate's second error; top 7: still two against one.
    assert choice.threshold == 0.95
    assert choice.metrics["gate_errors"] == choice.metrics["model_errors"] == 1
    assert choice.metrics["disagreements"] == 2
    assert choice.metrics["scored_share"] == pytest.approx(5 / 7)
    # Never below the model's own threshold, and never on fewer than min_support labels.
    assert gate.choose(confidence, gate_right, model_right, agree, floor=0.97, **loose).threshold == 0.97
    few = loose | {"min_support": 6}
    assert gate.choose(confidence, gate_right, model_right, agree, floor=0.5, **few).threshold == NEVER
    # Equal confidences are taken together or not at all.
    tied = np.array([0.99, 0.9, 0.9, 0.8])
    ok = np.ones(4, dtype=bool)
    choice = gate.choose(tied, np.array([1, 1, 0, 1], bool), ok, ok, floor=0, **loose)
    assert choice.threshold == 0.99


def test_a_gate_that_often_answers_otherwise_than_the_model_is_not_used_however_right() -> None:
    n = 400
    confidence = np.linspace(0.999, 0.9, n)
    right = np.ones(n, dtype=bool)  # both always right: the labels cannot tell them apart
    agree = np.ones(n, dtype=bool)
    agree[::10] = False  # but they disagree on one text in ten (both right: multi-label sets, say)
    strict = gate.choose(confidence, right, right, agree, floor=0.5, min_support=20, z=1.28)
    assert strict.threshold == NEVER
    agree[::10] = True
    agree[::200] = False  # one in 200: 0.5%, under the 2% bound once enough labels back it
    fine = gate.choose(confidence, right, right, agree, floor=0.5, min_support=20, z=1.28)
    assert fine.threshold == pytest.approx(0.9) and fine.metrics["disagreements"] == 2


def test_labels_only_one_candidate_scored_are_left_out() -> None:
    seen = np.array([True, False, True, True])
    model_seen = np.array([True, True, False, True])

    def answers(*values: str) -> np.ndarray:
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out

    cheap = gate.Scores(
        seen,
        np.array([0.9, 0.8, 0.7]),
        np.array([1, 1, 1], bool),
        np.array([0.6]),
        np.array([0], bool),
        answers("a", "b", "c"),
        answers("x"),
    )
    full = gate.Scores(
        model_seen,
        np.array([0.5, 0.5, 0.5]),
        np.array([1, 0, 1], bool),
        np.array([0.5]),
        np.array([1], bool),
        answers("a", "z", "c"),
        answers("y"),
    )
    # Scored by both: training labels 0 and 3 (the same answers), and the held-out one, where the gate errs.
    choice = gate.choose_between(cheap, full, floor=0.0, min_support=1, z=0.01)
    assert choice.metrics["scored"] == 3
    assert choice.threshold == 0.7 and choice.metrics["disagreements"] == 0


@pytest.mark.skipif(not embeddings.available("onnx-q8"), reason="the `embeddings` extra is not installed")
def test_gated_texts_are_never_embedded_and_answers_are_the_gate_s_or_the_model_s() -> None:
    rows = [json.loads(line) for line in dataset("ag_news_test").read_text().splitlines()]
    train_rows, stream = rows[:400], rows[400:600]
    params = TrainParams(features="tfidf+embeddings", target_accuracy=0.9, min_support=20)
    # The tfidf candidate is what the gate is made of: trained beside the embedding model under auto.
    model = train(
        [r["text"] for r in train_rows], [r["label"] for r in train_rows], replace(params, features="auto")
    )
    assert "embeddings" in model.features.kind, model.metrics["candidate_coverage"]
    assert model.gate is not None, model.metrics["gate"]
    assert model.gate.features.kind == "tfidf" and model.gate_threshold >= model.threshold
    assert model.metrics["gate"]["gate_errors"] <= model.metrics["gate"]["model_errors"]
    if "tfidf" in model.features.kind:  # one n-gram map, kept once in the file
        assert model.gate.features.vectorizer is model.features.vectorizer

    texts = [r["text"] for r in stream]
    cache: dict[str, np.ndarray] = {}
    answers = model.predict(texts, cache)
    gated = [t for t, p in zip(texts, answers, strict=True) if p.gated]
    assert 0 < len(gated) < len(texts)
    assert set(cache) == set(texts) - set(gated)  # the embedder saw only what the gate left
    ungated = replace(model, gate=None).predict(texts)
    cheap = model.gate.predict(texts)
    for p, full, first in zip(answers, ungated, cheap, strict=True):
        expected = replace(first, gated=True) if first.confidence >= model.gate_threshold else full
        assert p == expected
    # Gated answers are sure by the model's threshold: the runner accepts them and says so.
    runner = LocalRunner(
        taxonomy=from_dataset_labels("ag-news", sorted({r["label"] for r in rows}), multi_label=False),
        tier=local_tier(),
        model=model,
    )
    decisions = runner.run([DocIn(i, t) for i, t in enumerate(texts)])
    methods = {d.attempts[0].confidence_method for d, p in zip(decisions, answers, strict=True) if p.gated}
    assert methods == {"local_gate_proba"}
    assert all(d.outcome.value == "accepted" for d, p in zip(decisions, answers, strict=True) if p.gated)


def test_a_model_file_from_before_the_gate_loads_without_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = [json.loads(line) for line in dataset("ag_news_test").read_text().splitlines()][:200]
    model = train(
        [r["text"] for r in rows], [r["label"] for r in rows], TrainParams(features="tfidf", min_support=5)
    )
    del model.__dict__["gate"], model.__dict__["gate_threshold"]  # as pickled before the fields existed
    model.save(tmp_path / "m.joblib")
    loaded = LocalClassifier.load(tmp_path / "m.joblib")
    assert loaded.gate is None
    assert [p.label for p in loaded.predict([r["text"] for r in rows[:20]])] == [
        p.label for p in model.predict([r["text"] for r in rows[:20]])
    ]
