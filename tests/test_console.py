"""The review console in a real browser (Playwright driving Debian's Chromium) against a running API with a
real worker: log in with a key, review with the keyboard only, undo, bulk-accept, and what is refused."""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from api.main import create_app
from core.config import AuditSettings
from docsort.services import free_port
from store import keys
from store.db import session_scope
from store.models import Example
from tests.conftest import make_settings
from tests.processes import FakeProvider, wait_for
from tests.test_ledger import FAST, PRICES, fake_tiers
from worker.app import create_celery

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FINAL = {"done", "needs_review"}
UNSURE = [f"An unsure note number {i} about the markets and the match." for i in range(6)]
SCRIPT = "<script>window.pwned = 1; alert('x')</script> an unsure note that looks like code"
SCREENSHOTS = Path(os.environ.get("DOCSORT_SCREENSHOTS", ""))  # set to docs/ to refresh the README's


@pytest.fixture
def console(tmp_path: Path, fresh_redis: str) -> Iterator[dict[str, Any]]:
    """A running API (uvicorn, in a thread) with a real in-process worker; the fake provider answers."""
    import uvicorn
    from celery.contrib.testing.worker import start_worker

    from core.messaging import queue_names

    provider = FakeProvider(free_port(), tmp_path / "fake.log", PRICES)
    port = int(provider.url.rsplit(":", 1)[1])
    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        fresh_redis,
        models=fake_tiers(port),
        worker=FAST,
        audit=AuditSettings(rate=0.0),
    )
    settings.api.require_auth = True
    celery = create_celery(settings)
    app = create_app(settings, celery)
    with session_scope(app.state.engine) as session:
        _, key = keys.create_key(session=session, name="reviewer")
    api_port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=api_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{api_port}"
    wait_for(lambda: _up(base), 30, "the API")
    try:
        with start_worker(
            celery, pool="threads", concurrency=2, perform_ping_check=False, queues=queue_names(settings)
        ):
            yield {"base": base, "key": key, "app": app, "settings": settings}
    finally:
        server.should_exit = True
        thread.join(10)
        provider.kill()


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def api(context: dict[str, Any]) -> httpx.Client:
    return httpx.Client(
        base_url=context["base"], headers={"Authorization": f"Bearer {context['key']}"}, timeout=30
    )


def origins(context: dict[str, Any], document_id: int) -> list[str]:
    with Session(context["app"].state.engine) as session:
        return sorted(
            e.origin for e in session.exec(select(Example).where(Example.document_id == document_id))
        )


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="no chromium (apt-get install chromium)"
)
def test_review_with_the_keyboard_undo_and_bulk_accept_in_a_browser(console: dict[str, Any]) -> None:
    assert CHROMIUM, "CI installs chromium in .ci/run"
    from playwright.sync_api import sync_playwright

    with api(console) as client:
        r = client.post("/v1/documents", json={"documents": [{"text": t} for t in [*UNSURE, SCRIPT]]})
        ids = [d["id"] for d in r.json()["data"]]
        docs = wait_for(
            lambda: (
                (d := [client.get(f"/v1/documents/{i}").json() for i in ids])
                and all(x["status"] in FINAL for x in d)
                and d
            ),
            120,
            "the cascade to give up on every document",
        )
    assert {d["status"] for d in docs} == {"needs_review"}  # both tiers were unsure: suggestions at 0.1
    base = console["base"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
        page.goto(f"{base}/console/review")
        assert page.url.endswith("/console/login")  # nothing without a key
        # Chrome focuses an autofocus field when it next renders, which can come after the load
        # event on a busy machine: keys typed before then are lost (CI saw a half-typed key).
        page.wait_for_function("document.activeElement && document.activeElement.name === 'key'")
        page.keyboard.type(console["key"])  # the key field has focus
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r".*/console/review.*"))
        # Three documents with the keyboard only: the second label offered, then Enter.
        reviewed: dict[int, str] = {}
        for _ in range(3):
            document = int(page.locator("#document").get_attribute("data-document") or 0)
            chosen = page.locator('input[data-key="2"]').get_attribute("value") or ""
            page.keyboard.press("2")
            page.keyboard.press("Enter")
            page.wait_for_function(
                f"!document.querySelector('#document') || document.querySelector('#document').dataset.document != '{document}'"
            )
            reviewed[document] = chosen
        if SCREENSHOTS.name:
            page.screenshot(path=str(SCREENSHOTS / "console-review.png"), full_page=True)
        with api(console) as client:
            for document, label in reviewed.items():
                body = client.get(f"/v1/documents/{document}").json()
                assert (body["status"], body["label"], body["tier"]) == ("done", label, "review")
                assert origins(console, document) == ["review"]  # a person's label to learn from
            last = list(reviewed)[-1]
            page.keyboard.press("u")  # undo the last answer
            page.wait_for_url(re.compile(rf".*doc={last}.*"))
            body = client.get(f"/v1/documents/{last}").json()
            assert body["status"] == "needs_review" and body["tier"] == "large" and body["confidence"] < 0.5
            assert origins(console, last) == []  # the review's example is gone again
        # A document whose text holds a script renders as text: nothing runs.
        script_doc = ids[-1]
        page.goto(f"{base}/console/review?doc={script_doc}")
        assert page.locator("#text").text_content() == SCRIPT
        assert "&lt;script&gt;" in page.locator("#text").inner_html()
        assert page.evaluate("window.pwned") is None and not dialogs
        # Bulk accept: a filtered list, its count, a confirmation, then the decision is the person's.
        page.goto(f"{base}/console/bulk?tier=large&min_confidence=0.05")
        count = int(page.locator("#count").text_content() or 0)
        assert count == len(ids) - 2  # two of the seven stay reviewed
        page.locator("#confirm button").click()
        page.wait_for_selector("#accepted")
        assert dialogs == [f"Accept {count} suggestion(s)?"]
        page.goto(f"{base}/console/dashboard")
        assert "Documents by status and tier" in page.content()
        if SCREENSHOTS.name:
            page.screenshot(path=str(SCREENSHOTS / "console-dashboard.png"), full_page=True)
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        browser.close()
    with api(console) as client:
        states = [client.get(f"/v1/documents/{i}").json() for i in ids]
    accepted = [d for d in states if d["tier"] == "bulk_accept"]
    assert len(accepted) == count and all(d["status"] == "done" for d in accepted)
    assert all(origins(console, d["id"]) == ["bulk_accept"] for d in accepted)  # not a person's label
    # Refused: a form without a session, and one with a session but the wrong CSRF token.
    target = f"{base}/console/review/{ids[0]}"
    assert httpx.post(target, data={"label": "World", "csrf": "x"}).status_code == 401
    wrong = httpx.post(target, data={"label": "World", "csrf": "not-the-token"}, cookies=cookies)
    assert wrong.status_code == 403 and "CSRF" in wrong.json()["detail"]
    assert httpx.get(f"{base}/console/dashboard", follow_redirects=False).status_code == 303
