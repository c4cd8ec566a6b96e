"""The local tier's learning rules: which answers to learn from, when to retrain, which version answers.

Labels come from people (origin "gold": uploaded; "review": confirmed on a document) and from LLM
tiers (origin: the tier's name) when they accept a document at or above their threshold: any LLM tier
under `local.harvest = "accepted"` (their thresholds are set so that accepted answers are as good as the
cascade's), only the last one under "last_tier". The local tier's own answers are never learnt from.
A new version replaces the active one only if it scores at least as well on labels neither trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlmodel import Session

from classifiers import embeddings
from classifiers.decision import Decision
from classifiers.local import (
    LocalClassifier,
    NotEnoughLabels,
    TrainParams,
    candidates,
    in_holdout,
    label_text,
    train,
)
from classifiers.selective import person_given
from classifiers.taxonomy import Taxonomy
from core.config import Settings
from core.vocab import Outcome
from store import examples, local_models, text_embeddings
from store.db import session_scope
from store.models import LocalModel

log = logging.getLogger("docsort.learning")


def harvestable(
    settings: Settings, tier: str, decisions: Sequence[Decision], *, trusted: bool = False
) -> list[Decision]:
    """The decisions of an LLM tier whose answers the local tier may learn from.

    Under `local.harvest = "trusted"` (the default) a tier before the last one counts only while
    `trusted`: its audits show it meets its target (worker/audit.py); the last tier always counts.
    """
    rule = settings.local.harvest
    if not settings.learns or settings.tier(tier).kind == "local" or rule == "none":
        return []  # never learn from the local tier itself
    lower = settings.next_tier(tier) is not None
    if lower and (rule == "last_tier" or (rule == "trusted" and not trusted)):
        return []
    return [d for d in decisions if d.outcome is Outcome.accepted and d.answered]


def model_path(settings: Settings, taxonomy: str, version: int) -> Path:
    """Where a version's file lives (the workers need data_dir shared with whoever trains)."""
    return settings.data_dir / "local_models" / f"{taxonomy}-v{version}.joblib"


def load(settings: Settings, row: LocalModel | None) -> tuple[LocalClassifier | None, str]:
    """The classifier of a stored version and its model name; (None, "local") if it cannot answer here."""
    if row is None:
        return None, "local"
    try:
        path = Path(row.path)
        if not path.exists():  # trained elsewhere: look in this process's data_dir
            path = model_path(settings, row.taxonomy, row.version)
        model = LocalClassifier.load(path)
    except (OSError, ValueError, TypeError, EOFError, ImportError) as exc:
        log.warning("local model %s v%d unreadable, passing through: %s", row.taxonomy, row.version, exc)
        return None, "local"
    if "embeddings" in model.features.kind and not embeddings.available(model.features.embed_backend):
        log.warning(
            "local model %s v%d needs the `embeddings` extra; passing through", row.taxonomy, row.version
        )
        return None, "local"
    return model, f"local-v{row.version}:{row.features}"


def measured_teacher(
    settings: Settings, session: Session, taxonomy: Taxonomy
) -> tuple[float | None, str | None]:
    """The accuracy of the last LLM tier (the teacher of model-given labels) and where it came from.

    Measured on documents a person labelled after it accepted them, where there are enough; else what
    the tier promises (its own `target_accuracy`) if that is set; else (None, None), and the local tier's
    threshold rule assumes local.target_accuracy (classifiers/selective.py).
    """
    last = settings.models[-1] if settings.models else None
    if last is None or last.kind == "local":
        return None, None
    measured = examples.teacher_accuracy(session=session, taxonomy=taxonomy, tier=last.name)
    if measured is not None:
        accuracy, n = measured
        return accuracy, f"measured (n={n}, tier {last.name})"
    if last.target_accuracy is not None:
        return last.target_accuracy, f"assumed: tier {last.name}'s target_accuracy"
    return None, None


def train_version(
    *,
    engine: Engine,
    settings: Settings,
    taxonomy: Taxonomy,
    params: TrainParams | None = None,
    cache: dict[str, np.ndarray] | None = None,
) -> LocalModel:
    """Train a new version on the stored labels; it becomes active only if at least as good.

    Calibration and threshold follow who gave the labels (classifiers/local.py): a person's when
    enough were scored, else the last LLM tier's against its measured (or assumed) accuracy.
    cache: text -> embedding, shared across calls (benchmarks); None: the embeddings stored in the
    database, and those computed now are stored too, so no retrain embeds a text twice.
    """
    params = params or TrainParams.from_settings(settings.local)
    with session_scope(engine) as session:
        labelled = examples.training_set(
            session=session, taxonomy=taxonomy, limit=settings.local.max_examples
        )
        teacher_accuracy, teacher_source = measured_teacher(settings, session, taxonomy)
        incumbent = local_models.active_model(session=session, taxonomy=taxonomy)
        version = 1 + max(
            (r.version for r in local_models.versions(session=session, taxonomy=taxonomy.name)), default=0
        )
    texts, labels = labelled.texts, labelled.labels
    base: dict[str, Any] = {"taxonomy_version": taxonomy.version, "max_example_id": labelled.newest}
    keep = cache is None and any("embeddings" in kind for kind in candidates(params))
    embedder = embeddings.embedder_key(params.embed_backend, params.embed_max_tokens)
    if cache is None:  # the candidate and the incumbent embed the same texts
        cache = {}
        if keep:
            with session_scope(engine) as session:
                names = [label_text(c) for c in taxonomy.label_names]  # the label-name prior's texts
                cache = text_embeddings.load(session=session, embedder=embedder, texts=[*texts, *names])
    stored = set(cache)
    try:
        candidate = train(
            texts,
            labels,
            params,
            cache,
            sources=labelled.origins,
            teacher_accuracy=teacher_accuracy,
            teacher_accuracy_source=teacher_source,
        )
    except NotEnoughLabels as exc:
        # Stored, so that the next try waits for retrain_every more labels instead of every batch.
        row = LocalModel(
            taxonomy=taxonomy.name,
            version=version,
            features="-",
            n_train=len(texts),
            score=0.0,
            threshold=1.0,
            active=False,
            path="",
            metrics={**base, "error": str(exc)},
        )
        return _store(engine, row)
    path = model_path(settings, taxonomy.name, version).resolve()
    candidate.save(path)
    metrics = {**base, **candidate.metrics}
    score = metrics["holdout_accuracy"]
    if score is None:  # no held-out slice (holdout_fraction 0 or very few labels): out-of-fold instead
        score = metrics["oof_accuracy"]
    replace, metrics["comparison"] = _at_least_as_good(candidate, incumbent, labelled, params, cache)
    if keep:
        with session_scope(engine) as session:
            computed = {t: v for t, v in cache.items() if t not in stored}
            text_embeddings.save(session=session, embedder=embedder, vectors=computed)
        metrics["embeddings"] = {"embedder": embedder, "stored": len(stored), "computed": len(computed)}
    row = LocalModel(
        taxonomy=taxonomy.name,
        version=version,
        features=candidate.features.kind,
        n_train=metrics["n_train"],
        score=float(score),
        threshold=candidate.threshold,
        active=replace,
        path=str(path),
        metrics=metrics,
    )
    return _store(engine, row)


def _at_least_as_good(
    candidate: LocalClassifier,
    incumbent: LocalModel | None,
    labelled: examples.TrainingSet,
    params: TrainParams,
    cache: dict[str, np.ndarray],
) -> tuple[bool, dict[str, Any]]:
    """Whether the candidate scores at least the incumbent's accuracy on labels neither trained on.

    Model-given labels count too: under the threshold rule's assumption (a teacher's errors spread
    evenly), agreement with them rises with accuracy, so they rank two models as people's labels would.
    """
    # The held-out slice is fixed by text hash, so the incumbent never saw any of it either.
    if incumbent is None:
        return True, {"against": None}
    latest = {t: (y, o) for t, y, o in zip(labelled.texts, labelled.labels, labelled.origins, strict=True)}
    held = [(t, y, o) for t, (y, o) in latest.items() if in_holdout(t, params.holdout_fraction)]
    if not held or incumbent.metrics.get("holdout_fraction") != params.holdout_fraction:
        # No common held-out slice to compare on: the newer labels win.
        return True, {"against": incumbent.version, "compared": False}
    try:
        old = LocalClassifier.load(Path(incumbent.path))
    except (OSError, ValueError, TypeError) as exc:
        log.warning("incumbent local model unreadable, replacing it: %s", exc)
        return True, {"against": incumbent.version, "compared": False}
    held_texts, held_labels = [t for t, _, _ in held], [y for _, y, _ in held]
    new_score = candidate.accuracy(held_texts, held_labels, cache)
    old_score = old.accuracy(held_texts, held_labels, cache)
    verdict: dict[str, Any] = {"against": incumbent.version, "compared": True, "n": len(held)}
    verdict.update(candidate_accuracy=new_score, incumbent_accuracy=old_score)
    verdict["n_person"] = sum(person_given(o) for _, _, o in held)
    return new_score >= old_score, verdict


def _store(engine: Engine, row: LocalModel) -> LocalModel:
    with session_scope(engine) as session:
        row = local_models.add_version(session=session, row=row)
    log.info(
        "local model %s v%d: %s, score %.3f, threshold %.3f, active %s",
        row.taxonomy,
        row.version,
        row.features,
        row.score,
        row.threshold,
        row.active,
    )
    return row
