"""The README's main command, `docsort demo`, run as a user runs it (smallest model for both tiers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from docsort.services import free_port
from tests.conftest import WEIGHTS, offline_tiers

pytestmark = [pytest.mark.llm, pytest.mark.slow]


def test_demo_prints_the_table_and_totals(tmp_path: Path) -> None:
    port = free_port()
    tiers = [t.model_dump(mode="json") for t in offline_tiers(port)]
    for tier in tiers:
        tier["api_key"] = "not-needed"
    env = {
        **os.environ,
        "DOCSORT_DATA_DIR": str(tmp_path / "data"),
        "DOCSORT_WEIGHTS_DIR": str(WEIGHTS),
        "DOCSORT_MODELS": json.dumps(tiers),
        "DOCSORT_API__PORT": str(free_port()),
        "DOCSORT_FLOWER__PORT": str(free_port()),
        "COLUMNS": "160",
    }
    env.pop("DOCSORT_REDIS_URL", None)  # the demo starts its own Redis, as on a fresh machine
    env.pop("OPENAI_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "docsort.cli", "demo", "--timeout", "600"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "docsort demo: bundled sample documents" in out
    for needle in ("total cost:", "if all went to large:", "saving:"):
        assert needle in out
    for sample_id in ("s01", "b01", "w01", "t04"):
        assert sample_id in out
    assert out.count("done") + out.count("needs_review") >= 16
