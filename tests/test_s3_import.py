"""Bulk import of an S3 prefix against a real SeaweedFS, real databases, Redis and Celery workers."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

from api.main import create_app
from core.config import S3Settings, Settings
from core.messaging import queue_names
from docsort.demo import samples
from docsort.services import free_port
from tests import conftest
from tests.conftest import ROOT, make_settings
from tests.s3_fixtures import MANY, MAX_DOCUMENT_BYTES, MAX_OBJECT_BYTES, S3Server, put_many, s3_server  # noqa: F401
from worker.app import create_celery

FINAL = {"done", "failed"}


def settings_for(tmp_path: Path, database_url: str, redis_url: str, s3: S3Server, **s3_kw: Any) -> Settings:
    """Test settings pointing imports at the SeaweedFS endpoint (credentials come from the environment)."""
    values: dict[str, Any] = {
        "endpoint_url": s3.endpoint,
        "max_object_bytes": MAX_OBJECT_BYTES,
        "fetch_concurrency": 8,
    }
    values.update(s3_kw)
    settings = make_settings(tmp_path, database_url, redis_url, s3=S3Settings(**values))
    settings.api.max_document_bytes = MAX_DOCUMENT_BYTES
    return settings


@contextmanager
def running(settings: Settings, queues: list[str] | None = None) -> Iterator[TestClient]:
    """The API and a real worker; by default the worker takes only the imports queue (no models)."""
    with conftest.running(settings, create_celery(settings), queues or ["imports"]) as client:
        yield client


def wait(
    client: TestClient, import_id: int, until: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    """Poll the import until until(state) holds."""
    deadline = time.monotonic() + timeout
    while True:
        state: dict[str, Any] = client.get(f"/v1/imports/{import_id}").json()
        if until(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"import {import_id} stuck: {state}")
        time.sleep(0.2)


def listed(state: dict[str, Any]) -> bool:
    return bool(state["status"] != "listing")


def start(client: TestClient, s3: S3Server, prefix: str, **body: Any) -> int:
    r = client.post("/v1/imports", json={"source": f"s3://{s3.bucket}/{prefix}", **body})
    assert r.status_code == 202, r.text
    assert r.json()["queued"] is True
    return int(r.json()["id"])


def all_documents(client: TestClient, import_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/v1/imports/{import_id}/documents", params=params).json()
        docs += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return docs


def stored_texts(settings: Settings) -> dict[str, str]:
    """Every stored document's text by external id, read from the database."""
    engine = sqlalchemy.create_engine(settings.db_url)
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text("SELECT external_id, text FROM document")).all()
    engine.dispose()
    return {str(external_id): str(text) for external_id, text in rows}


def problem(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return str(response.json()["detail"])


def test_api_validates_imports(tmp_path: Path, database_url: str, fresh_redis: str, s3: S3Server) -> None:
    settings = settings_for(tmp_path, database_url, fresh_redis, s3)
    with TestClient(create_app(settings)) as client:
        for source in (
            "http://bucket/x",
            "s3://",
            "s3:///x",
            "s3://ab/x",
            "bucket/prefix",
            "s3://bad bucket/x",
        ):
            assert "source" in problem(client.post("/v1/imports", json={"source": source}), 422), source
        problem(client.post("/v1/imports", json={}), 422)
        problem(client.post("/v1/imports", json={"source": "s3://docsort-test/x", "extra": 1}), 422)
        assert "mode" in problem(
            client.post("/v1/imports", json={"source": "s3://docsort-test/x", "mode": "per_word"}), 422
        )
        assert "endpoint_url" in problem(
            client.post("/v1/imports", json={"source": "s3://docsort-test/x", "endpoint_url": "ftp://h"}), 422
        )
        assert "taxonomy" in problem(
            client.post("/v1/imports", json={"source": "s3://docsort-test/x", "taxonomy": "no such!"}), 422
        )
        assert "nope" in problem(
            client.post("/v1/imports", json={"source": "s3://docsort-test/x", "taxonomy": "nope"}), 404
        )
        for path in ("", "/documents", "/skips", "/export"):
            problem(client.get(f"/v1/imports/999{path}"), 404)
        problem(client.post("/v1/imports/999/resume"), 404)
        r = client.post("/v1/imports", json={"source": "s3://docsort-test"})  # a whole bucket
        assert r.status_code == 202, r.text
        import_id = r.json()["id"]
        problem(client.get(f"/v1/imports/{import_id}/export", params={"format": "xml"}), 422)
        state = client.get(f"/v1/imports/{import_id}").json()  # no worker: nothing listed yet
        assert state["status"] == "listing" and state["listed"] == 0 and state["taxonomy"] == "news"
        assert client.get("/v1/documents").json()["count"] == 0


def test_pagination_dedup_and_reimport(
    tmp_path: Path, database_url: str, fresh_redis: str, s3: S3Server
) -> None:
    settings = settings_for(tmp_path, database_url, fresh_redis, s3)
    keys = s3.keys("many/")
    assert len(keys) == MANY + 2 > 1000
    with running(settings) as client:
        first = start(client, s3, "many/")
        state = wait(client, first, listed)
        assert state["status"] == "classifying" and state["error"] is None  # stored, waiting for models
        assert (state["listed"], state["accepted"], state["duplicates"]) == (MANY + 2, MANY + 1, 1)
        assert state["skipped"] == state["failed"] == state["classified"] == 0
        assert state["pending"] == MANY + 1 and state["cost_usd"] == 0
        docs = all_documents(client, first)
        uris = [d["source"]["uri"] for d in docs]
        assert len(docs) == len(set(uris)) == MANY + 1
        assert set(uris) | {f"s3://{s3.bucket}/many/dup-b.txt"} == {f"s3://{s3.bucket}/{k}" for k in keys}
        one = next(d for d in docs if d["external_id"] == "many/00042.txt")
        assert one["status"] == "queued" and one["taxonomy"] == "news"
        assert one["source"]["etag"] and one["source"]["size"] == len(s3.objects["many/00042.txt"])
        assert one["source"]["last_modified"].startswith("20")
        assert redis.Redis.from_url(fresh_redis).llen("control") > 0  # dispatch queued after storing

        # The same prefix again: nothing new to store or pay for; its documents are the ones stored.
        again = start(client, s3, "many/")
        state = wait(client, again, listed)
        assert (state["listed"], state["accepted"], state["duplicates"]) == (MANY + 2, 0, MANY + 2)
        assert state["status"] == "classifying" and state["pending"] == MANY + 1  # still queued
        assert state["cost_usd"] == 0
        assert [d["id"] for d in all_documents(client, again)] == [d["id"] for d in docs]
        assert client.get("/v1/documents", params={"limit": 1000}).json()["next_cursor"] is not None

        # A changed object is a new document; the unchanged one is not.
        prefix = f"change-{uuid.uuid4().hex[:8]}/"
        put_many(s3.client, s3.bucket, {f"{prefix}a.txt": b"version one", f"{prefix}b.txt": b"stays"})
        wait(client, start(client, s3, prefix), listed)
        put_many(s3.client, s3.bucket, {f"{prefix}a.txt": b"version two"})
        changed = start(client, s3, prefix)
        state = wait(client, changed, listed)
        assert (state["accepted"], state["duplicates"]) == (1, 1)
        old, new = all_documents(client, changed)  # the unchanged one as stored before, then the new one
        assert old["external_id"] == f"{prefix}b.txt" and old["source"]["size"] == len(b"stays")
        assert new["external_id"] == f"{prefix}a.txt" and new["source"]["size"] == len(b"version two")


def test_every_format_and_every_bad_file(
    tmp_path: Path, database_url: str, fresh_redis: str, s3: S3Server
) -> None:
    settings = settings_for(tmp_path, database_url, fresh_redis, s3)
    with running(settings) as client:
        good = wait(client, start(client, s3, "formats/"), listed)
        assert (good["listed"], good["accepted"], good["skipped"]) == (8, 8, 0)
        texts = {d["external_id"]: d for d in all_documents(client, good["id"])}
        stored = stored_texts(settings)
        for key, phrase in {
            "formats/note.txt": "central banks",
            "formats/readme.md": "football final",
            "formats/page.html": "HTML about a new telescope.",
            "formats/paper.pdf": "quantum computing",
            "formats/letter.docx": "an election",
            "formats/data.json": "read whole",
            "formats/table.csv": "row two",
            "formats/lines.jsonl": '{"text": "b"}',
        }.items():
            assert phrase in stored[key], key
        assert "var x" not in stored["formats/page.html"]  # scripts are dropped by extraction

        bad = wait(client, start(client, s3, "bad/"), listed)
        assert bad["status"] == "done" and bad["accepted"] == 0 and bad["failed"] == 0
        reasons = {s["key"]: s["reason"] for s in bad["skips"]}
        expected = {
            "bad/broken.pdf": "unreadable",
            "bad/broken.docx": "unreadable",
            "bad/latin1.txt": "unreadable",
            "bad/binary.txt": "unreadable",
            "bad/empty.txt": "empty",
            "bad/blank.md": "empty",
            "bad/folder/": "empty",
            "bad/huge.txt": "too large",
            "bad/long.html": "too large",
            "bad/image.png": "unsupported type",
            "bad/README": "unsupported type",
        }
        listed_keys = set(s3.keys("bad/"))
        expected = {k: v for k, v in expected.items() if k in listed_keys}  # a store may hide folders
        assert bad["listed"] == bad["skipped"] == len(expected)
        for key, category in expected.items():
            assert reasons[key].startswith(category), (key, reasons[key])
        assert "UTF-8" in reasons["bad/latin1.txt"] and ".png" in reasons["bad/image.png"]
        assert str(MAX_OBJECT_BYTES) in reasons["bad/huge.txt"]
        assert bad["skip_reasons"] == {
            c: sum(1 for v in expected.values() if v == c) for c in set(expected.values())
        }
        page = client.get(f"/v1/imports/{bad['id']}/skips", params={"limit": 5}).json()
        rest = client.get(f"/v1/imports/{bad['id']}/skips", params={"cursor": page["next_cursor"]}).json()
        assert page["count"] == 5 and page["count"] + rest["count"] == len(expected)

        # Export: one row a document, as JSONL and CSV.
        rows = [json.loads(line) for line in client.get(f"/v1/imports/{good['id']}/export").text.splitlines()]
        assert sorted(r["key"] for r in rows) == sorted(texts)
        assert {"key", "line", "label", "confidence", "tier", "cost_usd", "status"} <= set(rows[0])
        r = client.get(f"/v1/imports/{good['id']}/export", params={"format": "csv"})
        assert r.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(r.text)))
        assert sorted(t["key"] for t in table) == sorted(texts) and table[0]["status"] == "queued"

        # A bucket that does not exist fails the import with the reason; resume tries again.
        r = client.post("/v1/imports", json={"source": "s3://no-such-bucket-here/x"})
        failed = wait(client, r.json()["id"], listed)
        assert failed["status"] == "failed" and "NoSuchBucket" in failed["error"]
        assert client.post(f"/v1/imports/{failed['id']}/resume").json()["status"] == "listing"
        assert wait(client, failed["id"], listed)["status"] == "failed"


def test_document_per_line(tmp_path: Path, database_url: str, fresh_redis: str, s3: S3Server) -> None:
    settings = settings_for(tmp_path, database_url, fresh_redis, s3)
    with running(settings) as client:
        state = wait(client, start(client, s3, "lines/", mode="document_per_line"), listed)
        docs = {d["external_id"]: d for d in all_documents(client, state["id"])}
        assert set(docs) == {
            "r1",
            "lines/records.jsonl#L2",
            "lines/records.jsonl#L4",
            "lines/records.jsonl#L6",
            "c1",
            "c2",
            "lines/array.json#L1",
            "lines/array.json#L2",
            "lines/notes.txt",
        }
        assert docs["r1"]["source"]["line"] == 1 and docs["r1"]["source"]["uri"].endswith("records.jsonl")
        assert docs["lines/records.jsonl#L4"]["source"]["line"] == 4
        assert "line" not in docs["lines/notes.txt"]["source"]
        assert state["accepted"] == 9 and state["listed"] == 5
        stored = stored_texts(settings)
        assert stored["r1"] == "Record one about markets."
        assert stored["lines/records.jsonl#L2"] == "Record two about tennis."
        assert stored["lines/records.jsonl#L4"] == "title: Record four\nauthor: Ann\nyear: 2020"
        assert stored["lines/records.jsonl#L6"] == "Record six is a bare string."
        assert stored["c2"] == "Row two about rugby."
        assert stored["lines/array.json#L2"] == "Second about golf."
        assert stored["lines/notes.txt"].count("\n") == 1
        reasons = {s["key"]: s["reason"] for s in state["skips"]}
        assert reasons == {
            "lines/records.jsonl#L3": reasons["lines/records.jsonl#L3"],
            "lines/records.jsonl#L5": "empty: no text",
            "lines/table.csv#L3": "empty: no text",
            "lines/broken.json#L1": reasons["lines/broken.json#L1"],
        }
        assert reasons["lines/records.jsonl#L3"].startswith("unreadable: invalid JSON")
        assert reasons["lines/broken.json#L1"].startswith("unreadable: invalid JSON")
        assert state["skipped"] == 4 and state["skip_reasons"] == {"unreadable": 2, "empty": 2}
        rows = [json.loads(x) for x in client.get(f"/v1/imports/{state['id']}/export").text.splitlines()]
        assert {(r["key"], r["line"]) for r in rows} >= {("lines/records.jsonl", 1), ("lines/table.csv", 2)}


def _worker_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSORT_") and k != "OPENAI_API_KEY"}
    assert settings.s3.endpoint_url is not None
    env.update(
        PYTHONPATH=str(ROOT),
        DOCSORT_DATA_DIR=str(settings.data_dir),
        DOCSORT_DATABASE_URL=settings.db_url,
        DOCSORT_REDIS_URL=str(settings.redis_url),
        DOCSORT_LOG_JSON="false",
        DOCSORT_S3__ENDPOINT_URL=settings.s3.endpoint_url,
        DOCSORT_S3__PAGE_SIZE=str(settings.s3.page_size),
        DOCSORT_S3__FETCH_CONCURRENCY="2",
    )
    argv = [sys.executable, "-m", "celery", "-A", "worker.entry:app", "worker", "-Q", "imports"]
    argv += ["-P", "threads", "-c", "1", "--without-mingle", "--without-gossip", "-l", "WARNING"]
    return subprocess.Popen(
        argv, env=env, cwd=log.parent, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def test_crash_in_the_middle_resumes_without_loss_or_doubles(
    tmp_path: Path, database_url: str, fresh_redis: str, s3: S3Server
) -> None:
    settings = settings_for(tmp_path, database_url, fresh_redis, s3, page_size=100, stale_after_s=1)
    keys = s3.keys("many/")
    with TestClient(create_app(settings)) as client:
        proc = _worker_process(settings, tmp_path / "worker.log")
        try:
            import_id = start(client, s3, "many/")
            state = wait(
                client, import_id, lambda s: s["listed"] >= 300 or s["status"] != "listing", timeout=90
            )
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # a crash: no shutdown, mid-page most likely
            proc.wait()
        state = client.get(f"/v1/imports/{import_id}").json()
        assert state["status"] == "listing" and 300 <= state["listed"] < len(keys), state
        assert state["listed"] % 100 == 0  # whole pages only
        assert len(all_documents(client, import_id)) == state["accepted"]
        assert state["accepted"] + state["duplicates"] == state["listed"]
    time.sleep(1.1)  # older than stale_after_s: the next worker resumes it on start
    with running(settings, queues=["imports", "control"]) as client:
        state = wait(client, import_id, listed, timeout=90)
        assert (state["listed"], state["accepted"], state["duplicates"]) == (len(keys), MANY + 1, 1)
        docs = all_documents(client, import_id)
        uris = sorted(d["source"]["uri"] for d in docs)
        assert len(uris) == len(set(uris)) == MANY + 1
        assert set(uris) == {f"s3://{s3.bucket}/{k}" for k in keys if k != "many/dup-b.txt"}


@pytest.mark.llm
@pytest.mark.slow
def test_import_end_to_end_through_the_cli_with_costs_and_write_back(
    tmp_path: Path, fresh_redis: str, llama_port: int, s3: S3Server
) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from docsort.cli import app as cli

    prefix = f"e2e-{uuid.uuid4().hex[:8]}/"
    put_many(s3.client, s3.bucket, {f"{prefix}{s['id']}.txt": s["text"].encode() for s in samples()[:2]})
    database_url = f"sqlite:///{tmp_path / 'docsort.db'}"  # classification once; storage runs on both
    settings = make_settings(tmp_path, database_url, fresh_redis, port=llama_port)
    settings.models[0].threshold = 0.0  # one model request for both: the small tier decides
    settings.s3.endpoint_url = s3.endpoint
    settings.worker.flush_interval_s = 0.2
    celery = create_celery(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, celery), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    with start_worker(
        celery, pool="threads", concurrency=2, perform_ping_check=False, queues=queue_names(settings)
    ):
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            result = CliRunner().invoke(
                cli,
                ["import", f"s3://{s3.bucket}/{prefix}", "--follow", "--api", f"http://127.0.0.1:{port}"],
                env={"COLUMNS": "200"},
            )
            assert result.exit_code == 0, result.output
            assert " done: listed 2, accepted 2" in result.output, result.output
            import_id = int(result.output.split("import ", 1)[1].split(":", 1)[0])
            with TestClient(create_app(settings, celery)) as client:
                state = client.get(f"/v1/imports/{import_id}").json()
                assert state["classified"] + state["needs_review"] == 2 and state["pending"] == 0
                docs = all_documents(client, import_id)
                assert all(d["label"] or d["status"] == "needs_review" for d in docs)
                assert (
                    state["cost_usd"] == pytest.approx(sum(d["cost_usd"] for d in docs))
                    and state["cost_usd"] > 0
                )
                rows = [
                    json.loads(x) for x in client.get(f"/v1/imports/{import_id}/export").text.splitlines()
                ]
                assert {r["label"] for r in rows} == {d["label"] for d in docs} and len(rows) == 2
                assert sum(r["cost_usd"] for r in rows) == pytest.approx(state["cost_usd"])
                spent = client.get("/v1/costs").json()["cost_usd"]

                written = client.post(f"/v1/imports/{import_id}/write-back").json()
                key = written["uri"].split("/", 3)[3]
                assert key == f"{prefix.rstrip('/')}.docsort-import-{import_id}.jsonl"
                deadline = time.monotonic() + 30
                while True:
                    try:
                        body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
                        break
                    except s3.client.exceptions.NoSuchKey:
                        assert time.monotonic() < deadline
                        time.sleep(0.2)
                assert sorted(json.loads(x)["key"] for x in body.splitlines()) == sorted(
                    r["key"] for r in rows
                )

                # The same prefix again: duplicates only, no new attempt, no new cost; its export
                # holds the documents it found stored, with their labels.
                again = start(client, s3, prefix)
                state = wait(client, again, lambda s: s["status"] == "done")
                assert (state["accepted"], state["duplicates"], state["cost_usd"]) == (0, 2, 0)
                assert state["classified"] + state["needs_review"] == 2
                reexport = [
                    json.loads(x) for x in client.get(f"/v1/imports/{again}/export").text.splitlines()
                ]
                assert sorted((r["document_id"], r["label"]) for r in reexport) == sorted(
                    (r["document_id"], r["label"]) for r in rows
                )
                time.sleep(1)
                assert client.get("/v1/costs").json()["cost_usd"] == pytest.approx(spent)
        finally:
            server.should_exit = True
            thread.join(10)


def test_sources_results_keys_and_record_text() -> None:
    from core.errors import InvalidInput
    from ingest.records import record_id, record_text
    from ingest.s3 import Limits, ObjectInfo, S3Location, precheck

    assert S3Location.parse("s3://bucket") == S3Location("bucket", "")
    assert S3Location.parse("s3://my.bucket/a/b/") == S3Location("my.bucket", "a/b/")
    with pytest.raises(InvalidInput):
        S3Location.parse("s3://b/" + "k" * 1100)
    # Results go next to the prefix; should a listing meet one, it is skipped, never imported.
    for prefix, key in (("data/", "data.docsort-import-7.jsonl"), ("", "docsort-import-7.jsonl")):
        assert S3Location("b", prefix).results_key(7) == key
    limits = Limits(max_object_bytes=100, max_document_bytes=100)
    skip = precheck(ObjectInfo("data/x-.docsort-import-7.jsonl", "e", 10, "t"), limits)
    assert skip is not None and skip.startswith("unsupported type")
    assert precheck(ObjectInfo("data/a.JSONL", "e", 10, "t"), limits) is None
    assert record_text({"TEXT": "t", "body": "b"}) == "t" and record_text(["a", 1, None]) == "a\n1"
    assert record_text({"id": 5, "n": 1.5, "ok": True, "none": None}) == "n: 1.5\nok: True"
    assert record_text(42) == "" and record_id({"id": 5}) == "5" and record_id({"id": True}) is None
