"""`docsort eval` and `docsort calibrate`: run tiers over a labelled dataset, score, calibrate."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from classifiers.calibration import Calibrator, choose_threshold, fit, sweep
from classifiers.evaluate import Labelled, TierResult, correct, docs_of, report
from classifiers.local import LocalClassifier
from classifiers.runners import build_runner, spec_for
from classifiers.taxonomy import Taxonomy, from_dataset_labels
from core.config import Settings
from core.tiers import ModelTier
from docsort.services import Supervisor, llama_services
from store import calibrations, taxonomies
from store.db import make_engine, migrate, session_scope
from store.models import Calibration


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def endpoints(settings: Settings) -> Iterator[None]:
    """Start the offline llama.cpp servers the tiers need, unless something already listens."""
    supervisor = Supervisor(settings.data_dir / "logs")
    try:
        for service in llama_services(settings):
            port = int(service.name.split("-")[-1])
            if not _listening(port):
                supervisor.start(service)
        yield
    finally:
        supervisor.stop()


def resolve_taxonomy(settings: Settings, name: str | None, rows: list[Labelled]) -> Taxonomy:
    """The stored taxonomy called name, else one built from the dataset's labels."""
    multi = any(len(row.gold) != 1 for row in rows)
    if name is None:
        return from_dataset_labels("dataset", [g for row in rows for g in row.gold], multi_label=multi)
    migrate(settings.db_url)
    with session_scope(make_engine(settings.db_url)) as session:
        if name == settings.default_taxonomy.name:
            taxonomies.put_taxonomy(session=session, spec=settings.default_taxonomy)
        return taxonomies.to_runtime(taxonomies.require(session=session, name=name))


def run_tier(
    settings: Settings, taxonomy: Taxonomy, tier: ModelTier, rows: list[Labelled], *, raw: bool = True
) -> TierResult:
    """One tier over every row through the workers' runner; raw confidences unless raw=False."""
    stored = None
    if not raw:
        with session_scope(make_engine(settings.db_url)) as session:
            stored = calibrations.latest_calibration(session=session, taxonomy=taxonomy.name, tier=tier.name)
    spec = spec_for(settings, tier.name, taxonomy)
    runner = build_runner(
        replace(
            spec,
            is_last=tier is settings.llm_tiers[-1],
            reference=settings.llm_tiers[-1],
            calibration=stored.params if stored else None,
            threshold=stored.threshold if stored else None,
        )
    )
    return TierResult.from_decisions(tier.name, runner.run(docs_of(rows)))


def local_result(
    settings: Settings, taxonomy: Taxonomy, rows: list[Labelled], model: LocalClassifier
) -> tuple[TierResult, float]:
    """The local tier's answers on rows through the workers' runner, and the threshold it answers at."""
    tier = next(t for t in settings.models if t.kind == "local")
    spec = spec_for(settings, tier.name, taxonomy, local_model=model, local_model_name="local")
    result = TierResult.from_decisions(tier.name, build_runner(spec).run(docs_of(rows)))
    return result, max(model.threshold, tier.threshold)  # the tier may be stricter, never looser


def local_model(
    settings: Settings, taxonomy: Taxonomy, train_file: Path | None, rows: list[Labelled], console: Any
) -> LocalClassifier | None:
    """The local tier's model for eval: trained from train_file, else the taxonomy's active version."""
    from classifiers.evaluate import load_jsonl
    from classifiers.local import TrainParams, train
    from store import local_models
    from worker import training

    if not settings.learns:
        return None
    if train_file is not None:
        labelled = load_jsonl(train_file)
        overlap = {r.text for r in labelled} & {r.text for r in rows}
        if overlap:
            console.print(
                f"[yellow]{len(overlap)} texts are both trained on and scored: the score flatters[/]"
            )
        labels = [r.gold if taxonomy.multi_label else r.gold[0] for r in labelled]
        return train([r.text for r in labelled], labels, TrainParams.from_settings(settings.local))
    if taxonomy.name == "dataset":
        return None
    with session_scope(make_engine(settings.db_url)) as session:
        row = local_models.active_model(session=session, taxonomy=taxonomy)
    model, _ = training.load(settings, row)
    return model


def evaluate(
    settings: Settings, taxonomy: Taxonomy, rows: list[Labelled], local: LocalClassifier | None = None
) -> dict[str, Any]:
    """Each tier, the cascade as deployed (the local tier first when a model is given) and the oracle, on
    rows, with the thresholds in force (stored calibrations win)."""
    results: list[TierResult] = []
    thresholds: list[float] = []
    calibrators: list[Calibrator | None] = []
    if local is not None and settings.learns:
        result, threshold = local_result(settings, taxonomy, rows, local)
        results.append(result)
        thresholds.append(threshold)
        calibrators.append(None)  # its confidences are calibrated already
    for tier in settings.llm_tiers:
        results.append(run_tier(settings, taxonomy, tier, rows))
        stored = None
        if taxonomy.name != "dataset":
            with session_scope(make_engine(settings.db_url)) as session:
                stored = calibrations.latest_calibration(
                    session=session, taxonomy=taxonomy.name, tier=tier.name
                )
        calibrators.append(Calibrator.from_params(stored.params) if stored else None)
        thresholds.append(stored.threshold if stored else tier.threshold)
    out = report(
        rows,
        results,
        thresholds,
        taxonomy.label_names,
        multi_label=taxonomy.multi_label,
        calibrators=calibrators,
    )
    out["taxonomy"] = {"name": taxonomy.name, "version": taxonomy.version}
    out["local_tier"] = "included" if len(results) > len(settings.llm_tiers) else "left out (no model)"
    llm = len(results) - len(settings.llm_tiers)  # the sweep is of the first LLM tier against the last
    out["plot"] = _plot_data(out, results[llm:], calibrators[llm], thresholds[llm], rows, taxonomy)
    return out


def _plot_data(
    out: dict[str, Any],
    results: list[TierResult],
    calibrator: Calibrator | None,
    threshold: float,
    rows: list[Labelled],
    taxonomy: Taxonomy,
) -> dict[str, Any]:
    """The threshold sweep of the first tier against the last, in the shape plot() draws."""
    gold = [row.gold for row in rows]
    first, last = results[0], results[-1]
    first_ok = [correct(g, p, taxonomy.multi_label) for g, p in zip(gold, first.predicted, strict=True)]
    last_ok = [correct(g, p, taxonomy.multi_label) for g, p in zip(gold, last.predicted, strict=True)]
    conf = [calibrator(c) if calibrator else c for c in first.confidence]
    points = sweep(conf, first_ok, last_ok, first.cost_nanousd, last.cost_nanousd)
    at = min(points, key=lambda p: abs(p.threshold - threshold))
    systems = out["systems"]
    return {
        "taxonomy": out["taxonomy"],
        "documents": len(rows),
        "sweep": [vars(p) for p in points],
        "chosen": vars(at),
        "small_only": {"accuracy": systems[first.tier]["accuracy"], "cost_nanousd": sum(first.cost_nanousd)},
        "large_only": {"accuracy": systems[last.tier]["accuracy"], "cost_nanousd": sum(last.cost_nanousd)},
        "oracle": {
            "accuracy": systems["oracle"]["accuracy"],
            "cost_nanousd": round(systems["oracle"]["cost_usd"] * 1e9),
        },
    }


def calibrate(
    settings: Settings,
    taxonomy: Taxonomy,
    rows: list[Labelled],
    *,
    target_gap: float,
    method: str = "isotonic",
) -> dict[str, Any]:
    """Fit a calibrator per tier and pick the cheapest first-tier threshold within target_gap of large-only."""
    small_tier, large_tier = settings.llm_tiers[0], settings.llm_tiers[-1]
    small = run_tier(settings, taxonomy, small_tier, rows)
    large = run_tier(settings, taxonomy, large_tier, rows)
    gold = [row.gold for row in rows]
    small_ok = [correct(g, p, taxonomy.multi_label) for g, p in zip(gold, small.predicted, strict=True)]
    large_ok = [correct(g, p, taxonomy.multi_label) for g, p in zip(gold, large.predicted, strict=True)]
    cal_small = fit(small.confidence, small_ok, method)  # type: ignore[arg-type]
    cal_large = fit(large.confidence, large_ok, method)  # type: ignore[arg-type]
    calibrated = [cal_small(c) for c in small.confidence]
    points = sweep(calibrated, small_ok, large_ok, small.cost_nanousd, large.cost_nanousd)
    large_accuracy = sum(large_ok) / len(rows) if rows else 0.0
    best = choose_threshold(points, large_accuracy, target_gap)
    oracle_cost = sum(small.cost_nanousd) + sum(
        c for c, ok in zip(large.cost_nanousd, small_ok, strict=True) if not ok
    )
    oracle_accuracy = (
        sum(s or lg for s, lg in zip(small_ok, large_ok, strict=True)) / len(rows) if rows else 0.0
    )
    result = {
        "taxonomy": {"name": taxonomy.name, "version": taxonomy.version},
        "documents": len(rows),
        "method": method,
        "target_gap": target_gap,
        "threshold": best.threshold,
        "chosen": vars(best),
        "small_only": {
            "accuracy": sum(small_ok) / len(rows) if rows else 0.0,
            "cost_nanousd": sum(small.cost_nanousd),
        },
        "large_only": {"accuracy": large_accuracy, "cost_nanousd": sum(large.cost_nanousd)},
        "oracle": {"accuracy": oracle_accuracy, "cost_nanousd": oracle_cost},
        "sweep": [vars(p) for p in points],
        "note": "fitted and chosen on the same rows (in-sample)",
    }
    if taxonomy.name != "dataset":
        with session_scope(make_engine(settings.db_url)) as session:
            for tier, cal, threshold in (
                (small_tier, cal_small, best.threshold),
                (large_tier, cal_large, large_tier.threshold),
            ):
                calibrations.add_calibration(
                    session=session,
                    calibration=Calibration(
                        taxonomy=taxonomy.name,
                        tier=tier.name,
                        model=tier.model,
                        method=method,
                        params=cal.params,
                        threshold=float(min(threshold, 1.0)),
                        report={k: v for k, v in result.items() if k != "sweep"},
                    ),
                )
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    """Cost against accuracy across thresholds, with small-only, large-only and the oracle marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep_points = result["sweep"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(
        [p["cost"] / 1e9 for p in sweep_points],
        [p["accuracy"] for p in sweep_points],
        "-",
        color="0.6",
        label="cascade (thresholds)",
    )
    for key, marker in (("small_only", "o"), ("large_only", "s"), ("oracle", "*")):
        point = result[key]
        ax.plot(
            point["cost_nanousd"] / 1e9, point["accuracy"], marker, markersize=10, label=key.replace("_", "-")
        )
    chosen = result["chosen"]
    ax.plot(
        chosen["cost"] / 1e9,
        chosen["accuracy"],
        "D",
        markersize=9,
        label=f"chosen t={chosen['threshold']:.2f}",
    )
    ax.set_xlabel("cost (USD)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"docsort cascade: {result['taxonomy']['name']}, {result['documents']} documents")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write a report as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
