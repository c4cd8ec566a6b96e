"""The docsort commands about quality and learning: eval, calibrate, train, quality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from core.config import Settings
from core.logs import setup_logging

console = Console()


def _settings() -> Settings:
    settings = Settings()
    setup_logging(settings)
    return settings


def eval_(
    dataset: Annotated[Path, typer.Option(help="Labelled JSONL (id, text, label|labels)")],
    json_out: Annotated[Path, typer.Option("--json", help="Write the report here")],
    taxonomy: Annotated[str | None, typer.Option(help="Stored taxonomy; default: from the labels")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG of cost against accuracy")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N rows")] = None,
    train: Annotated[
        Path | None,
        typer.Option("--train", help="Labelled JSONL to train the local tier on (not the dataset!)"),
    ] = None,
) -> None:
    """Score the cascade as deployed (the local tier first: trained from --train, or the taxonomy's active
    model), each tier alone, and the oracle on a labelled dataset; each tier's share and accuracy."""
    from classifiers.evaluate import load_jsonl
    from docsort import evalrun

    settings = _settings()
    rows = load_jsonl(dataset, limit)
    tax = evalrun.resolve_taxonomy(settings, taxonomy, rows)
    local = evalrun.local_model(settings, tax, train, rows, console)
    with evalrun.endpoints(settings):
        result = evalrun.evaluate(settings, tax, rows, local)
    evalrun.write_json(result, json_out)
    for name, row in result["systems"].items():
        console.print(
            f"{name:>8}: accuracy {row['accuracy']:.3f}  macro_f1 {row['macro_f1']:.3f}  "
            f"cost ${row['cost_usd']:.6f}  per 1k ${row['cost_per_1k_docs']:.4f}  "
            f"escalation {row['escalation_rate'] if row['escalation_rate'] is not None else '-'}"
        )
    for tier, part in result["cascade_tiers"].items():
        accuracy = "-" if part["accuracy"] is None else f"{part['accuracy']:.3f}"
        console.print(f"{tier:>8} in the cascade: share {part['share']:.1%}  accuracy {accuracy}")
    console.print(f"local tier: {result['local_tier']}")
    if plot:
        evalrun.plot(result["plot"], plot)
        console.print(f"plot: {plot}")


def calibrate(
    taxonomy: Annotated[str, typer.Option(help="Stored taxonomy name")],
    dataset: Annotated[Path, typer.Option(help="Labelled JSONL")],
    target_gap: Annotated[float, typer.Option(help="Allowed accuracy gap to large-only")] = 0.01,
    method: Annotated[str, typer.Option(help="isotonic or platt")] = "isotonic",
    json_out: Annotated[Path, typer.Option("--json")] = Path("calibration.json"),
    plot: Annotated[Path, typer.Option()] = Path("calibration.png"),
    limit: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Fit confidence calibration per tier and choose the cheapest safe threshold; workers use it."""
    from classifiers.evaluate import load_jsonl
    from docsort import evalrun

    settings = _settings()
    rows = load_jsonl(dataset, limit)
    tax = evalrun.resolve_taxonomy(settings, taxonomy, rows)
    with evalrun.endpoints(settings):
        result = evalrun.calibrate(settings, tax, rows, target_gap=target_gap, method=method)
    evalrun.write_json(result, json_out)
    evalrun.plot(result, plot)
    console.print(
        f"threshold {result['threshold']:.3f}: accuracy {result['chosen']['accuracy']:.3f} "
        f"(large-only {result['large_only']['accuracy']:.3f}), escalation {result['chosen']['escalation_rate']:.2f}; "
        f"saved; report {json_out}, plot {plot}"
    )


def train(
    taxonomy: Annotated[str, typer.Option(help="Stored taxonomy; created from the labels if missing")],
    dataset: Annotated[Path, typer.Option(help="Labelled JSONL: text, label (or labels)")],
    limit: Annotated[int | None, typer.Option(help="Only the first N rows")] = None,
) -> None:
    """Store a labelled file as gold examples and train a new local model version on every label."""
    from classifiers.taxonomy import from_dataset_labels
    from core.errors import InputError
    from store import examples, taxonomies
    from store.db import make_engine, session_scope
    from store.db import migrate as run
    from worker import training

    settings = _settings()
    with dataset.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()][:limit]
    items = [{"text": r["text"], "label": r.get("label"), "labels": r.get("labels")} for r in rows]
    run(settings.db_url)
    engine = make_engine(settings.db_url)
    try:
        with session_scope(engine) as session:
            row = taxonomies.get_taxonomy(session=session, name=taxonomy, missing_ok=True)
            if row is None:
                names = [x for i in items for x in ([i["label"]] if i["label"] else i["labels"] or [])]
                multi = any(i["labels"] is not None for i in items)
                spec = from_dataset_labels(taxonomy, names, multi_label=multi)
                row = taxonomies.put_taxonomy(session=session, spec=spec)
                console.print(f"created taxonomy {taxonomy} with {len(row.labels)} labels from the file")
            current = taxonomies.to_runtime(row)
            stored = examples.add_examples(session=session, taxonomy=current, items=items)
    except InputError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"stored {stored} gold examples for {taxonomy}; training...")
    model = training.train_version(engine=engine, settings=settings, taxonomy=current)
    m = model.metrics
    if "error" in m:
        console.print(f"[red]not trained: {m['error']}[/]")
        raise typer.Exit(1)
    console.print(
        f"{taxonomy} local model v{model.version}: {model.features}, {model.n_train} trained + "
        f"{m['n_holdout']} held out; held-out accuracy {model.score:.3f}; threshold {model.threshold:.3f} "
        f"answers {m['pooled_coverage']:.0%} at accuracy >= {m['target_accuracy']}; "
        + ("active" if model.active else "kept the active version (it scored better)")
    )
    if not settings.learns:
        console.print("[yellow]no tier of kind local in `models`: the cascade does not use it yet[/]")


def quality(
    taxonomy: Annotated[str | None, typer.Option(help="Stored taxonomy; default: settings")] = None,
    since: Annotated[str | None, typer.Option(help="Only since this moment (ISO 8601)")] = None,
) -> None:
    """Live quality per tier: answered, audits, agreement and its 90% interval, target, trust."""
    from datetime import datetime

    from rich.table import Table

    from core.errors import InputError
    from store import quality as report
    from store.db import make_engine, session_scope
    from store.db import migrate as run

    settings = _settings()
    run(settings.db_url)
    name = taxonomy or settings.default_taxonomy.name
    try:
        moment = datetime.fromisoformat(since) if since else None
        with session_scope(make_engine(settings.db_url)) as session:
            data = report.report(session=session, settings=settings, taxonomy=name, since=moment)
    except (InputError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    table = Table(title=f"quality of {name}: audited by {data['auditor']} at rate {data['audit_rate']:.0%}")
    for column in (
        "tier",
        "answered",
        "share",
        "audits",
        "agreement",
        "90% interval",
        "implied",
        "target",
        "trust",
    ):
        table.add_column(column, justify="left" if column in ("tier", "trust") else "right")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    for row in data["tiers"]:
        interval = row.get("interval_90")
        table.add_row(
            row["tier"],
            str(row["answered"]),
            pct(row["share"]),
            "-" if row["audits"] is None else str(row["audits"]),
            pct(row["agreement"]),
            "-" if not interval else f"{interval[0]:.1%}-{interval[1]:.1%}",
            pct(row["implied_agreement"]),
            pct(row["target"]),
            row["trust"],
        )
    console.print(table)
    console.print(f"needs review: {data['needs_review']} of {data['documents']}")
    console.print(f"estimated accuracy: {pct(data['estimated_accuracy'])} ({data['note']})")
    for change in data["changes"]:
        state = "in force" if change["in_force"] else f"undone by {change['undone_by']}"
        console.print(
            f"change {change['id']} ({state}): {change['tier']} {change['action']}: {change['reason']}"
        )
