"""Flower in a real browser: basic auth, the worker, and a finished classification task."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.config import FlowerSettings, WorkerSettings
from docsort.services import free_port
from tests.conftest import make_settings
from tests.processes import WorkerProcess, settings_env, wait_for

pytestmark = [pytest.mark.llm, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="no chromium (apt-get install chromium)"
)
def test_flower_shows_the_worker_and_a_finished_task(
    tmp_path: Path, fresh_redis: str, llama_port: int
) -> None:
    assert CHROMIUM, "CI installs chromium in .ci/run"
    from playwright.sync_api import sync_playwright

    port = free_port()
    password = "a-test-password-7Qx"
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        fresh_redis,
        port=llama_port,
        worker=WorkerSettings(concurrency=1, flush_interval_s=0.1),
        flower=FlowerSettings(port=port, password=password),
    )
    env = {**os.environ, **settings_env(settings), "FLOWER_BASIC_AUTH": f"docsort:{password}"}
    flower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.entry:app",
            "flower",
            "--address=127.0.0.1",
            f"--port={port}",
        ],
        env=env,
        stdout=(tmp_path / "flower.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log", "flowertest")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base), 60, "flower")
        assert httpx.get(f"{base}/workers", timeout=5).status_code == 401  # no password, no page
        with TestClient(create_app(settings)) as client:
            doc_id = client.post(
                "/v1/documents", json={"text": "The harbour reopened after the storm."}
            ).json()["data"][0]["id"]
            wait_for(
                lambda: client.get(f"/v1/documents/{doc_id}").json()["status"] in {"done", "needs_review"},
                300,
                "classification",
            )
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                ],
            )
            context = browser.new_context(http_credentials={"username": "docsort", "password": password})
            page = context.new_page()
            page.goto(f"{base}/workers")
            page.wait_for_selector("text=flowertest@test", timeout=60_000)
            page.goto(f"{base}/tasks")
            page.wait_for_selector("text=docsort.classify_batch", timeout=60_000)
            page.wait_for_selector("text=SUCCESS", timeout=60_000)
            page.screenshot(path=str(tmp_path / "flower-tasks.png"), full_page=True)
            content = page.content()
            assert "The harbour reopened" not in content  # arguments are ids, never text
            browser.close()
    finally:
        worker.stop()
        flower.terminate()
        flower.wait(timeout=20)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
