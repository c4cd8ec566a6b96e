"""`docsort eval` and `docsort calibrate` against the real local model, and the runtime using the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from classifiers.evaluate import load_jsonl
from docsort import evalrun
from store import calibrations
from store.db import make_engine, session_scope
from tests.conftest import dataset, make_settings
from tests.processes import settings_env
from worker.runtime import Runtime

pytestmark = [pytest.mark.llm, pytest.mark.slow]


@pytest.fixture
def rows() -> list:  # type: ignore[type-arg]
    return load_jsonl(dataset("ag_news_test"), 8)


def test_eval_cli_writes_every_system(tmp_path: Path, llama_port: int, redis_url: str, rows: list) -> None:  # type: ignore[type-arg]
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", redis_url, port=llama_port)
    out, png = tmp_path / "eval.json", tmp_path / "eval.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "docsort.cli",
            "eval",
            "--dataset",
            str(dataset("ag_news_test")),
            "--taxonomy",
            "news",
            "--json",
            str(out),
            "--plot",
            str(png),
            "--limit",
            "8",
        ],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["systems"]) == {"small", "large", "cascade", "oracle"}
    for row in report["systems"].values():
        for key in (
            "accuracy",
            "macro_f1",
            "per_class",
            "cost_usd",
            "cost_per_1k_docs",
            "escalation_rate",
            "threshold",
            "input_tokens",
            "output_tokens",
        ):
            assert key in row
        assert 0 <= row["accuracy"] <= 1
    # The arithmetic of each system is tested on known answers in test_evaluate.py; here, that the real
    # tiers were asked: each spent tokens and money on every document.
    for name in ("small", "large"):
        assert report["systems"][name]["input_tokens"] > 8 * 50 and report["systems"][name]["cost_usd"] > 0
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_calibrate_saves_a_threshold_the_workers_use(
    tmp_path: Path, llama_port: int, redis_url: str, rows: list
) -> None:  # type: ignore[type-arg]
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", redis_url, port=llama_port)
    taxonomy = evalrun.resolve_taxonomy(settings, "news", rows)
    result = evalrun.calibrate(settings, taxonomy, rows, target_gap=0.01)
    assert 0 <= result["threshold"] <= 1.000001
    large = result["large_only"]["accuracy"]
    assert result["chosen"]["accuracy"] >= large - 0.01 or result["chosen"]["accuracy"] == max(
        p["accuracy"] for p in result["sweep"]
    )
    with session_scope(make_engine(settings.db_url)) as session:
        stored = calibrations.latest_calibration(session=session, taxonomy="news", tier="small")
    assert stored is not None and stored.threshold == pytest.approx(min(result["threshold"], 1.0))
    runner = Runtime(settings).runner(taxonomy, "small")
    assert runner.model.tier.threshold == pytest.approx(stored.threshold)
    assert runner.calibrate is not None
    evalrun.plot(result, tmp_path / "cal.png")
    assert (tmp_path / "cal.png").exists()


def test_eval_scores_the_cascade_as_deployed_with_its_local_tier(tmp_path: Path, redis_url: str) -> None:
    """`docsort eval --train`: the local tier first, then the LLM tiers (the fake provider here)."""
    from core.tiers import local_tier
    from docsort.services import free_port
    from tests.processes import FakeProvider
    from tests.test_ledger import PRICES, fake_tiers

    provider = FakeProvider(free_port(), tmp_path / "fake.log", PRICES)
    try:
        port = int(provider.url.rsplit(":", 1)[1])
        settings = make_settings(
            tmp_path,
            f"sqlite:///{tmp_path / 'db.sqlite'}",
            redis_url,
            models=[local_tier(), *fake_tiers(port, timeout_s=30.0)],
        )
        rows = [json.loads(line) for line in dataset("ag_news_test").read_text().splitlines()]
        scored, taught = tmp_path / "scored.jsonl", tmp_path / "taught.jsonl"
        scored.write_text("\n".join(json.dumps(r) for r in rows[:60]))
        taught.write_text("\n".join(json.dumps(r) for r in rows[100:400]))
        out = tmp_path / "eval.json"
        command = [sys.executable, "-m", "docsort.cli", "eval", "--dataset", str(scored), "--json", str(out)]
        result = subprocess.run(
            [*command, "--train", str(taught)],
            env={**os.environ, **settings_env(settings)},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    finally:
        provider.kill()
    report = json.loads(out.read_text())
    assert report["local_tier"] == "included"
    assert set(report["systems"]) == {"local", "small", "large", "cascade", "oracle"}
    parts = report["cascade_tiers"]
    assert list(parts) == ["local", "small", "large"]
    assert sum(p["answered"] for p in parts.values()) == 60
    assert parts["local"]["share"] > 0.3  # 300 AG News labels answer a good part of it for free
    right = sum(p["answered"] * p["accuracy"] for p in parts.values() if p["answered"])
    assert report["systems"]["cascade"]["accuracy"] == pytest.approx(right / 60)
    # The local tier costs nothing: the cascade costs less than the LLM tiers' share of it would alone.
    assert report["systems"]["local"]["cost_usd"] == 0
    assert (
        report["systems"]["cascade"]["cost_usd"]
        < report["systems"]["small"]["cost_usd"] + report["systems"]["large"]["cost_usd"]
    )
