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

from sqlalchemy import Engine

from classifiers import embeddings
from classifiers.decision import Decision
from classifiers.local import Label, LocalClassifier, NotEnoughLabels, TrainParams, in_holdout, train
from classifiers.taxonomy import Taxonomy
from core.config import Settings
from core.vocab import Outcome
from store import examples, local_models
from store.db import session_scope
from store.models import LocalModel

log = logging.getLogger("docsort.learning")


def harvestable(settings: Settings, tier: str, decisions: Sequence[Decision]) -> list[Decision]:
    """The decisions of an LLM tier whose answers the local tier may learn from."""
    rule = settings.local.harvest
    if not settings.learns or settings.tier(tier).kind == "local" or rule == "none":
        return []  # never learn from the local tier itself
    if rule == "last_tier" and settings.next_tier(tier) is not None:
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


def train_version(
    *, engine: Engine, settings: Settings, taxonomy: Taxonomy, params: TrainParams | None = None
) -> LocalModel:
    """Train a new version on the stored labels; it becomes active only if at least as good."""
    params = params or TrainParams.from_settings(settings.local)
    with session_scope(engine) as session:
        texts, labels, newest = examples.training_set(
            session=session, taxonomy=taxonomy, limit=settings.local.max_examples
        )
        incumbent = local_models.active_model(session=session, taxonomy=taxonomy)
        version = 1 + max(
            (r.version for r in local_models.versions(session=session, taxonomy=taxonomy.name)), default=0
        )
    base: dict[str, Any] = {"taxonomy_version": taxonomy.version, "max_example_id": newest}
    try:
        candidate = train(texts, labels, params)
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
    replace, metrics["comparison"] = _at_least_as_good(candidate, incumbent, texts, labels, params)
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
    texts: list[str],
    labels: list[Label],
    params: TrainParams,
) -> tuple[bool, dict[str, Any]]:
    """Whether the candidate scores at least the incumbent's accuracy on labels neither trained on."""
    # The held-out slice is fixed by text hash, so the incumbent never saw any of it either.
    if incumbent is None:
        return True, {"against": None}
    latest = dict(zip(texts, labels, strict=True))
    held = [(t, y) for t, y in latest.items() if in_holdout(t, params.holdout_fraction)]
    if not held or incumbent.metrics.get("holdout_fraction") != params.holdout_fraction:
        # No common held-out slice to compare on: the newer labels win.
        return True, {"against": incumbent.version, "compared": False}
    try:
        old = LocalClassifier.load(Path(incumbent.path))
    except (OSError, ValueError, TypeError) as exc:
        log.warning("incumbent local model unreadable, replacing it: %s", exc)
        return True, {"against": incumbent.version, "compared": False}
    held_texts, held_labels = [t for t, _ in held], [y for _, y in held]
    new_score = candidate.accuracy(held_texts, held_labels)
    old_score = old.accuracy(held_texts, held_labels)
    verdict: dict[str, Any] = {"against": incumbent.version, "compared": True, "n": len(held)}
    verdict.update(candidate_accuracy=new_score, incumbent_accuracy=old_score)
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
