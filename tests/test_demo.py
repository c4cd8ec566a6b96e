"""The README's main command, `docsort demo`, run as a user runs it: the configuration it ships."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from docsort.demo import samples
from docsort.services import free_port
from tests.conftest import WEIGHTS

pytestmark = [pytest.mark.llm, pytest.mark.slow]


def test_demo_teaches_the_local_tier_and_shows_answers_beside_the_truth(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DOCSORT_DATA_DIR": str(tmp_path / "data"),
        "DOCSORT_WEIGHTS_DIR": str(WEIGHTS),  # shared: the weights are 400 MB
        "DOCSORT_API__PORT": str(free_port()),
        "DOCSORT_FLOWER__PORT": str(free_port()),
        "COLUMNS": "200",
    }
    for name in ("DOCSORT_REDIS_URL", "DOCSORT_MODELS", "DOCSORT_DATABASE_URL", "OPENAI_API_KEY"):
        env.pop(name, None)  # its own Redis and database, the shipped tiers, offline
    result = subprocess.run(
        [sys.executable, "-m", "docsort.cli", "demo", "--timeout", "600"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "local tier: trained on 400 labelled items" in out
    truth = {s["id"]: s["label"] for s in samples()}
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) >= 8 and cells[1] in truth:
            rows[cells[1]] = cells
    assert set(rows) == set(truth)  # every sample, once
    right = 0
    for sample_id, cells in rows.items():
        assert cells[2] == truth[sample_id]  # the true label beside the answer
        answer, status = cells[3], cells[4]
        assert status in {"done", "needs_review"}
        if answer.endswith("✓"):
            right += 1
            assert answer.removesuffix(" ✓") == truth[sample_id]
        elif answer.endswith("✗"):
            assert answer.removesuffix(" ✗") != truth[sample_id]
    accuracy = re.search(rf"overall accuracy:\s+(\d+)/{len(truth)}", out)
    assert accuracy is not None and int(accuracy.group(1)) == right
    local = re.search(r"│ local\s+│\s+(\d+) │", out)
    assert local is not None and int(local.group(1)) > len(truth) / 2  # the local tier answers most
    for needle in ("total cost:", "if all went to large:", "saving:", "Offline mode:"):
        assert needle in out
