"""compose.yaml under a real container runtime: build the images (from Debian packages, no registry
pulls), bring the stack up with docker-compose, classify documents through the published API, scale the
workers, tear down and leave nothing behind. Plus cheap static checks of the file that need no engine.

The end-to-end test starts dockerd if none answers and we are root; without a runtime it skips, and in
CI (CI set) it fails instead. Measured times and how to run it: docs/deploy.md."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests import docker_env

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = {"migrate", "llm", "api", "worker", "beat", "flower"}
FINAL = {"done", "needs_review", "failed"}
DOCUMENTS = [
    "The central bank raised interest rates by half a point as inflation stayed high; bank shares rose.",
    "The striker scored twice in the second half and the home team won the cup final 3-1.",
    "Researchers launched a satellite that will map the ocean floor with a new radar instrument.",
    "Leaders of both countries signed a ceasefire after talks mediated by the United Nations.",
]


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


# Static checks: cheap, no engine needed.


def test_services_gates_and_one_shot_migration() -> None:
    services = load()["services"]
    assert set(services) == {"redis", "postgres", *APP_SERVICES}
    for name in ("redis", "postgres", "llm", "api", "worker", "flower"):
        assert "healthcheck" in services[name], name
    for name in ("api", "worker", "beat", "flower"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["command"] == ["docsort", "migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_workers_scale_and_beat_runs_alone() -> None:
    services = load()["services"]
    worker, beat = services["worker"], services["beat"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][:4] == ["celery", "-A", "worker.entry:app", "worker"]
    # No embedded beat (every replica would run one) and no queue list (it would miss new tiers).
    assert "-B" not in worker["command"] and "--beat" not in worker["command"]
    assert "-Q" not in worker["command"]
    assert beat["command"][:4] == ["celery", "-A", "worker.entry:app", "beat"]
    schedule = beat["command"][beat["command"].index("-s") + 1]
    assert schedule.startswith(("/data/", "/tmp/"))
    for name in APP_SERVICES:
        assert "data:/data" in services[name]["volumes"], name  # local models are files every worker reads


def test_offline_models_are_served_to_the_workers_by_host() -> None:
    data = load()
    env = data["x-docsort-env"]
    assert env["DOCSORT_OFFLINE__HOST"] == "llm"
    llm = data["services"]["llm"]
    assert llm["command"] == ["docsort", "serve-models"]
    assert llm["environment"]["DOCSORT_OFFLINE__BIND"] == "0.0.0.0"
    assert "ports" not in llm  # reached on compose's network only


def test_ports_are_local_and_images_overridable() -> None:
    text = (ROOT / "compose.yaml").read_text()
    services = load()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\$\{DOCSORT_\w+_PORT:-\d+\}:\d+", port), (name, port)
    assert services["redis"]["image"].startswith("${REDIS_IMAGE:-")
    assert services["postgres"]["image"].startswith("${POSTGRES_IMAGE:-")
    assert "DOCSORT_BASE_IMAGE: ${DOCSORT_BASE_IMAGE:-" in text
    for required in ("POSTGRES_PASSWORD", "DOCSORT_FLOWER__PASSWORD"):
        assert f"${{{required}:?" in text, required
    # Compose v1 reads none of v2's own syntax.
    code = "\n".join(line.split("#")[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "develop:" not in code and "!reset" not in code and "!override" not in code


def test_the_dockerfile_copies_what_exists_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for src in line.split()[1:-1]:
                if "$" not in src:
                    assert (ROOT / src).exists(), src
    assert re.search(r"^USER docsort$", dockerfile, re.M)
    assert "GGML_NATIVE=OFF" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".docsort", ".git"} <= set(ignored)


def test_compose_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    """docker-compose's own parser (v1, or v2) accepts the file, and insists on the two secrets."""
    compose = docker_env.compose_command()
    if compose is None:
        docker_env.unavailable("no docker-compose to parse compose.yaml with")
    assert compose is not None
    base = [
        *compose,
        "--project-directory",
        str(ROOT),
        "-f",
        str(ROOT / "compose.yaml"),
        "-p",
        "docsortcheck",
    ]
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    for present, absent in (
        ("POSTGRES_PASSWORD", "DOCSORT_FLOWER__PASSWORD"),
        ("DOCSORT_FLOWER__PASSWORD", "POSTGRES_PASSWORD"),
    ):
        partial = tmp_path / f"{absent}.env"
        partial.write_text(f"{present}=k3Jd8\n")
        missing = docker_env.run([*base, "--env-file", str(partial), "config", "-q"], env=env, check=False)
        assert missing.returncode != 0 and f"set {absent}" in missing.stderr, missing.stderr
    values = tmp_path / "values.env"
    values.write_text("POSTGRES_PASSWORD=x7Yq2\nDOCSORT_FLOWER__PASSWORD=p9Lk4\n")
    resolved = yaml.safe_load(docker_env.run([*base, "--env-file", str(values), "config"], env=env).stdout)
    api_env = resolved["services"]["api"]["environment"]
    assert api_env["DOCSORT_DATABASE_URL"] == "postgresql+psycopg://docsort:x7Yq2@postgres:5432/docsort"
    assert api_env["DOCSORT_ENV"] == "production" and api_env["DOCSORT_API__REQUIRE_AUTH"] == "true"
    assert resolved["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "docsort:p9Lk4"


# The real thing.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Timings:
    """How long each step took: printed (pytest -s shows it) and, if DOCSORT_COMPOSE_TIMINGS names a
    file, written there as JSON (docs/deploy.md's figures come from it). Never asserted on."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.started = time.monotonic()
        self.last = self.started

    def mark(self, step: str) -> None:
        now = time.monotonic()
        self.steps[step] = round(now - self.last, 1)
        self.last = now
        print(f"[compose test] {step}: {self.steps[step]:.1f}s", flush=True)

    def save(self) -> None:
        self.steps["total"] = round(time.monotonic() - self.started, 1)
        target = os.environ.get("DOCSORT_COMPOSE_TIMINGS")
        if target:
            Path(target).write_text(json.dumps(self.steps, indent=2) + "\n")
        print(f"[compose test] timings: {self.steps}", flush=True)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[docker_env.Compose, str, Timings]]:
    """The images built, the stack up under a project of its own; always torn down afterwards."""
    timings = Timings()
    compose_cmd = docker_env.require_runtime()
    timings.mark("engine")
    docker_env.stage_host_cas()
    docker_env.build_base_image()
    timings.mark("base image")
    docker_env.build_service_images()
    timings.mark("redis and postgres images")
    docker_env.stage_wheelhouse()
    timings.mark("wheelhouse")
    project = f"docsorttest{uuid.uuid4().hex[:10]}"
    api_port = flower_port = free_port()
    while flower_port == api_port:
        flower_port = free_port()
    values = {
        "DOCSORT_ENV": "production",
        "DOCSORT_API__REQUIRE_AUTH": "true",
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "DOCSORT_FLOWER__PASSWORD": secrets.token_hex(16),
        "DOCSORT_BASE_IMAGE": docker_env.BASE_IMAGE,
        "DOCSORT_IMAGE": docker_env.APP_IMAGE,
        "REDIS_IMAGE": docker_env.REDIS_IMAGE,
        "POSTGRES_IMAGE": docker_env.POSTGRES_IMAGE,
        "DOCSORT_API_PORT": str(api_port),
        "DOCSORT_FLOWER_PORT": str(flower_port),
    }
    compose = docker_env.Compose(compose_cmd, project, values, tmp_path / "compose.env")
    try:
        # One build serves every service: they all name the same image. --force-rm: a failed step leaves
        # no container behind.
        compose("build", "--force-rm", "migrate", timeout=3600)
        timings.mark("app image")
        compose("up", "-d", timeout=900)
        timings.mark("compose up")
        yield compose, f"http://127.0.0.1:{api_port}", timings
    finally:
        # The test tears down itself and checks; anything left means it failed on the way: show why.
        if any(compose.leftovers().values()):
            print(compose("ps", check=False).stdout)
            print(compose("logs", "--no-color", "--tail", "60", check=False).stdout[-20000:])
            compose.down()
        timings.save()


def wait_ready(api: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{api}/readyz", timeout=10)
            body = r.json()
            if r.status_code == 200:
                return body
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(2)
    raise AssertionError(f"the composed API never became ready: {body}")


def wait_final(http: httpx.Client, ids: list[int], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    docs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        docs = [http.get(f"/v1/documents/{i}").raise_for_status().json() for i in ids]
        if all(d["status"] in FINAL for d in docs):
            return docs
        time.sleep(3)
    raise AssertionError(f"not final: {[(d['id'], d['status'], d['stage']) for d in docs]}")


def pongs(compose: docker_env.Compose) -> set[str]:
    """The Celery nodes that answer a ping, asked from inside a worker container."""
    ping = ["celery", "-A", "worker.entry:app", "inspect", "ping", "--json", "--timeout", "10"]
    result = compose("exec", "-T", "worker", *ping, timeout=120, check=False)
    for line in reversed(result.stdout.splitlines()):
        try:
            replies = json.loads(line)
        except ValueError:
            continue
        if isinstance(replies, dict) and replies and all(isinstance(v, dict) for v in replies.values()):
            return {node for node, reply in replies.items() if reply.get("ok") == "pong"}
    return set()


@pytest.mark.compose
@pytest.mark.slow
@pytest.mark.timeout(3600)  # cold: llama.cpp compiles once (8-15 min) and the dependencies download
def test_compose_up_classifies_scales_and_leaves_nothing_behind(
    stack: tuple[docker_env.Compose, str, Timings],
) -> None:
    compose, api, timings = stack
    ready = wait_ready(api, timeout=600)
    assert ready["checks"]["database"] == "ok" and ready["checks"]["redis"] == "ok"
    assert ready["checks"]["model:small"] == "ok" and ready["checks"]["model:large"] == "ok"
    timings.mark("ready")

    # Production: the API refuses a request without a key; a key made in the api container works.
    assert httpx.post(f"{api}/v1/documents", json={"text": "no key"}, timeout=10).status_code == 401
    made = compose("exec", "-T", "api", "docsort", "keys", "create", "--name", "test", timeout=120)
    key = made.stdout.strip().splitlines()[-1].strip()
    assert len(key) >= 20 and " " not in key, made.stdout

    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        r = http.post("/v1/documents", json={"documents": [{"text": text} for text in DOCUMENTS]})
        assert r.status_code == 202, r.text
        assert r.json()["queued"] is True
        ids = [d["id"] for d in r.json()["data"]]
        assert len(set(ids)) == len(DOCUMENTS)
        # The local tier is untrained: every document goes on to the offline models in the llm service.
        docs = wait_final(http, ids, timeout=900)
        timings.mark("classified")
        for doc in docs:
            assert doc["status"] in {"done", "needs_review"}, doc
            assert doc["attempts"], doc
            assert doc["cost_usd"] > 0, doc
            assert {a["tier"] for a in doc["attempts"]} <= {"small", "large"}, doc
            for attempt in doc["attempts"]:
                assert attempt["input_tokens"] > 0 and attempt["output_tokens"] > 0, attempt
            if doc["status"] == "done":
                assert doc["label"] in {"World", "Sports", "Business", "Sci/Tech"}, doc
        for doc in docs:
            tiers = [a["tier"] for a in doc["attempts"]]
            print(f"[compose test] document {doc['id']}: {doc['status']} {doc['label']} via {tiers}")
        costs = http.get("/v1/costs").raise_for_status().json()
        assert costs["documents"] == len(DOCUMENTS)
        assert costs["cost_usd"] == pytest.approx(sum(d["cost_usd"] for d in docs))
        assert costs["cost_usd"] > 0 and costs["requests"]["answered"] > 0

    # Beat, its own service, sends the periodic jobs (the worker's start-up reconcile is not it).
    deadline = time.monotonic() + 120
    while "Sending due task" not in (beat_log := compose("logs", "--no-color", "beat").stdout):
        assert time.monotonic() < deadline, beat_log[-3000:]
        time.sleep(5)

    # Flower: behind basic auth with the password from the environment.
    flower = f"http://127.0.0.1:{compose.env['DOCSORT_FLOWER_PORT']}"
    assert httpx.get(f"{flower}/workers", timeout=10).status_code == 401
    auth = ("docsort", compose.env["DOCSORT_FLOWER__PASSWORD"])
    assert httpx.get(f"{flower}/workers", auth=auth, timeout=10).status_code == 200

    # Scale the workers: two containers, and both answer a Celery ping; beat stays one.
    compose("up", "-d", "--scale", "worker=2", timeout=600)
    workers = compose.container_ids("worker")
    assert len(workers) == 2, workers
    hostnames = {
        docker_env.run(["docker", "inspect", "-f", "{{.Config.Hostname}}", cid]).stdout.strip()
        for cid in workers
    }
    expected = {f"celery@{hostname}" for hostname in hostnames}
    deadline = time.monotonic() + 180
    answered: set[str] = set()
    while time.monotonic() < deadline and not expected <= answered:
        answered = pongs(compose)
        time.sleep(2)
    assert expected <= answered, (expected, answered)
    assert len(compose.container_ids("beat")) == 1
    timings.mark("scaled to 2 workers")

    compose.down()
    timings.mark("compose down")
    assert compose.leftovers() == {"containers": [], "networks": [], "volumes": []}
