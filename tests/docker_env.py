"""A container runtime for the compose test: start the Docker engine if it is not running, build the
images it needs from Debian packages (no registry is pulled from), and run docker-compose.

Used by tests/test_compose.py; .ci/run installs docker.io, docker-compose and mmdebstrap."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BASE_IMAGE = os.environ.get("DOCSORT_TEST_BASE_IMAGE", "docsort-base:bookworm")
REDIS_IMAGE = "docsort-test-redis:bookworm"
POSTGRES_IMAGE = "docsort-test-postgres:bookworm"
APP_IMAGE = "docsort-compose-test:latest"
DOCKERD_LOG = Path(os.environ.get("DOCSORT_DOCKERD_LOG", "/var/log/docsort-dockerd.log"))
HOST_CAS = Path("/usr/local/share/ca-certificates")


def run(
    argv: Sequence[str],
    *,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """argv's result; on failure (with check) an AssertionError carrying its output's tail."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"stdout: {result.stdout[-4000:]}\nstderr: {result.stderr[-4000:]}"
        )
    return result


def engine_answers() -> bool:
    """Whether `docker info` reaches a running engine."""
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


def start_engine(timeout: float = 90) -> str | None:
    """Start dockerd in the background if no engine answers and we may; None if one answers now, else
    why not. The engine keeps running after the tests (with its image cache, which is the point)."""
    if engine_answers():
        return None
    if shutil.which("docker") is None:
        return "no docker client (apt-get install docker.io)"
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return "no Docker engine answers and there is no dockerd to start (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "no Docker engine answers, and only root may start dockerd here"
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with DOCKERD_LOG.open("ab") as log:
        # Its own session, so that it outlives this test process (and its cache with it).
        subprocess.Popen(
            [dockerd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine_answers():
            return None
        time.sleep(1)
    tail = DOCKERD_LOG.read_text(errors="replace")[-2000:]
    return f"started dockerd but it did not answer within {timeout:.0f}s; {DOCKERD_LOG}:\n{tail}"


def compose_command() -> list[str] | None:
    """docker-compose (v1), else `docker compose` (v2), whichever is installed."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    return None


def unavailable(reason: str) -> None:
    """Skip for reason; in CI (CI set) fail instead: there the runtime is part of the job."""
    if os.environ.get("CI"):
        pytest.fail(f"container runtime unavailable in CI: {reason}")
    pytest.skip(reason)


def require_runtime() -> list[str]:
    """The compose command, with an engine that answers; skips (fails in CI) when there can be none."""
    reason = start_engine()
    if reason:
        unavailable(reason)
    compose = compose_command()
    if compose is None:
        unavailable("no docker-compose (apt-get install docker-compose)")
    assert compose is not None
    return compose


def image_exists(name: str) -> bool:
    return run(["docker", "image", "inspect", name], check=False).returncode == 0


def stage_host_cas() -> list[Path]:
    """The host's extra CA certificates copied into deploy/certs, the Dockerfile's EXTRA_CA_CERTS
    directory (a TLS-intercepting proxy between the build and PyPI needs them); unchanged files are not
    rewritten, so the build cache holds."""
    staged = []
    for cert in sorted(HOST_CAS.glob("**/*.crt")) if HOST_CAS.is_dir() else []:
        target = DEPLOY / "certs" / cert.name
        if not target.exists() or target.read_bytes() != cert.read_bytes():
            shutil.copyfile(cert, target)
        staged.append(target)
    return staged


def build_base_image() -> None:
    """The Debian base image (mmdebstrap | docker import), unless it exists."""
    if image_exists(BASE_IMAGE):
        return
    if shutil.which("mmdebstrap") is None:
        unavailable(f"no {BASE_IMAGE} image and no mmdebstrap to build it (apt-get install mmdebstrap)")
    run(["bash", str(DEPLOY / "base-image.sh"), BASE_IMAGE], timeout=900)


def build_service_images() -> None:
    """Redis and PostgreSQL from Debian's packages on the base image (cached layers when unchanged)."""
    for name, folder in ((REDIS_IMAGE, "redis"), (POSTGRES_IMAGE, "postgres")):
        run(
            ["docker", "build", "-q", "--force-rm", "--build-arg", f"BASE={BASE_IMAGE}", "-t", name, folder],
            cwd=DEPLOY / "test-images",
            timeout=900,
        )


def stage_wheelhouse() -> None:
    """The llama-cpp-python wheel for the base image in deploy/wheelhouse (compiled once, cached)."""
    run(["bash", str(DEPLOY / "wheelhouse.sh"), BASE_IMAGE], timeout=2700)


class Compose:
    """docker-compose for one project, with an environment of its own (nothing from a developer's .env
    or shell: the secrets, images and ports are the test's)."""

    def __init__(self, command: list[str], project: str, values: dict[str, str], env_file: Path) -> None:
        self.project = project
        env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
        self.argv = [*command, "--project-directory", str(ROOT), "-f", str(ROOT / "compose.yaml")]
        self.argv += ["-p", project, "--env-file", str(env_file)]
        keep = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")
        self.env = {key: os.environ[key] for key in keep if key in os.environ}
        self.env.update(values)

    def __call__(
        self, *args: str, timeout: float = 900, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([*self.argv, *args], timeout=timeout, check=check, env=self.env)

    def container_ids(self, service: str | None = None, *, all_states: bool = False) -> list[str]:
        """The project's containers (of one service), running only unless all_states."""
        argv = [
            "docker",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
        ]
        if service:
            argv += ["--filter", f"label=com.docker.compose.service={service}"]
        if all_states:
            argv.append("-a")
        return run(argv).stdout.split()

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes still labelled with this project."""
        label = f"label=com.docker.compose.project={self.project}"
        return {
            "containers": self.container_ids(all_states=True),
            "networks": run(["docker", "network", "ls", "-q", "--filter", label]).stdout.split(),
            "volumes": run(["docker", "volume", "ls", "-q", "--filter", label]).stdout.split(),
        }

    def down(self) -> None:
        self("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300, check=False)
