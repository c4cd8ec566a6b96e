"""compose.yaml cannot run here (no Docker engine); check that what it names exists in the repo."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_every_service_is_there_with_a_healthcheck_gate() -> None:
    services = load()["services"]
    assert {"redis", "postgres", "llm", "api", "worker", "flower"} <= set(services)
    for name in ("redis", "postgres", "llm", "api"):
        assert "healthcheck" in services[name], name
    for name in ("api", "worker", "flower"):
        for dep in services[name]["depends_on"].values():
            assert dep["condition"] == "service_healthy"


def test_builds_and_commands_refer_to_real_files_and_modules() -> None:
    services = load()["services"]
    for name, service in services.items():
        if "build" in service:
            context = ROOT / service["build"]
            assert (context / "Dockerfile").is_file(), name
        command = service.get("command", [])
        for i, word in enumerate(command):
            if word in {"-A", "--factory"}:
                module, _, attr = command[i + 1].partition(":")
                spec = importlib.util.find_spec(module)
                assert spec is not None and spec.origin is not None, (name, module)
                assert (
                    f"def {attr}" in Path(spec.origin).read_text()
                    or f"{attr} =" in Path(spec.origin).read_text()
                )
            if word.startswith("/app/"):
                assert (ROOT / word.removeprefix("/app/")).is_file(), (name, word)
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


def test_llm_config_names_pinned_weights() -> None:
    config = json.loads((ROOT / "deploy" / "llama.json").read_text())
    pinned = json.loads((ROOT / "docsort" / "weights.lock.json").read_text())
    for model in config["models"]:
        assert Path(model["model"]).stem in pinned


def test_the_worker_consumes_every_queue_of_the_default_cascade(tmp_path: Path) -> None:
    from core.config import Settings
    from core.messaging import queue_names

    worker = load()["services"]["worker"]["command"]
    queues = worker[worker.index("-Q") + 1].split(",")
    assert set(queues) == set(queue_names(Settings(data_dir=tmp_path)))
