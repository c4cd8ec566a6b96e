"""The HTTP API against a real database (SQLite and PostgreSQL) and a real Redis, no worker."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.routes.imports import _check_endpoint
from core.errors import Forbidden
from tests.conftest import make_settings


@pytest.fixture
def client(tmp_path: Path, database_url: str, fresh_redis: str) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, database_url, fresh_redis)
    settings.api.max_document_bytes = 2000
    settings.api.max_documents_per_request = 5
    with TestClient(create_app(settings)) as c:
        yield c


def problem(response, status: int) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["detail"]
    return str(body["detail"])


def test_post_stores_then_queues_and_get_shows_it(client: TestClient) -> None:
    r = client.post(
        "/v1/documents", json={"text": "Rain in Spain", "external_id": "x1", "metadata": {"k": 1}}
    )
    assert r.status_code == 202, r.text
    [accepted] = r.json()["data"]
    assert accepted["duplicate"] is False and r.json()["queued"] is True
    doc = client.get(f"/v1/documents/{accepted['id']}").json()
    assert doc["status"] == "queued" and doc["metadata"] == {"k": 1} and doc["taxonomy"] == "news"
    assert doc["attempts"] == [] and doc["cost_usd"] == 0


def test_same_text_same_taxonomy_is_the_same_document(client: TestClient) -> None:
    first = client.post("/v1/documents", json={"text": "Same words"}).json()["data"][0]
    again = client.post("/v1/documents", json={"documents": [{"text": "Same words"}, {"text": "Same words"}]})
    ids = [d["id"] for d in again.json()["data"]]
    assert ids == [first["id"], first["id"]]
    assert all(d["duplicate"] for d in again.json()["data"])


def test_keyset_pagination_and_filters(client: TestClient) -> None:
    client.post("/v1/documents", json={"documents": [{"text": f"doc {i}"} for i in range(5)]})
    page = client.get("/v1/documents", params={"limit": 2}).json()
    assert page["count"] == 2 and page["next_cursor"] == page["data"][-1]["id"]
    rest = client.get("/v1/documents", params={"limit": 10, "cursor": page["next_cursor"]}).json()
    assert rest["count"] == 3 and rest["next_cursor"] is None
    assert client.get("/v1/documents", params={"status": "done"}).json()["count"] == 0
    problem(client.get("/v1/documents", params={"status": "nonsense"}), 422)


def test_bad_input_gets_clear_4xx(client: TestClient) -> None:
    assert "empty" in problem(client.post("/v1/documents", json={"text": "   "}), 422)
    assert "text" in problem(client.post("/v1/documents", json={"text": 5}), 422)
    assert "text" in problem(client.post("/v1/documents", json={"documents": [{"txt": "x"}]}), 422)
    problem(client.post("/v1/documents", json={"documents": []}), 422)
    problem(
        client.post("/v1/documents", content=b"{not json", headers={"content-type": "application/json"}),
        422,
    )
    problem(client.post("/v1/documents", content=b"hello", headers={"content-type": "text/plain"}), 415)
    r = client.post("/v1/documents", json={"text": "x" * 3000})
    problem(r, 413)
    assert r.json()["limit"] == 2000
    problem(client.post("/v1/documents", json={"documents": [{"text": f"d{i}"} for i in range(6)]}), 413)
    problem(client.post("/v1/documents", json={"text": "x", "taxonomy": "nope"}), 404)
    problem(client.get("/v1/documents/999999"), 404)
    assert client.get("/v1/documents").json()["count"] == 0  # nothing half-stored


def test_file_upload_extracts_text(client: TestClient) -> None:
    html = b"<html><script>evil()</script><body><p>Central bank holds rates</p></body></html>"
    files = [
        ("files", ("a.txt", io.BytesIO(b"plain words"), "text/plain")),
        ("files", ("b.html", io.BytesIO(html), "text/html")),
    ]
    r = client.post("/v1/documents", files=files)
    assert r.status_code == 202, r.text
    ids = [d["id"] for d in r.json()["data"]]
    docs = [client.get(f"/v1/documents/{i}").json() for i in ids]
    assert [d["external_id"] for d in docs] == ["a.txt", "b.html"]
    assert docs[0]["text"] == "plain words"
    assert docs[1]["text"] == "Central bank holds rates"  # the script is gone, the markup too
    bad = client.post(
        "/v1/documents", files=[("files", ("x.exe", io.BytesIO(b"MZ"), "application/octet-stream"))]
    )
    problem(bad, 415)
    latin1 = client.post(
        "/v1/documents",
        files=[("files", ("l.txt", io.BytesIO("café".encode("latin-1")), "text/plain"))],
    )
    assert "UTF-8" in problem(latin1, 422)
    broken_pdf = client.post(
        "/v1/documents",
        files=[("files", ("x.pdf", io.BytesIO(b"%PDF-1.4 garbage"), "application/pdf"))],
    )
    problem(broken_pdf, 422)


def test_taxonomies_are_versioned(client: TestClient) -> None:
    body = {"labels": [{"name": "spam"}, {"name": "ham"}]}
    v1 = client.put("/v1/taxonomies/mail", json=body).json()
    same = client.put("/v1/taxonomies/mail", json=body).json()
    v2 = client.put("/v1/taxonomies/mail", json={**body, "none_label": "unknown"}).json()
    assert (v1["version"], same["version"], v2["version"]) == (1, 1, 2)
    assert client.get("/v1/taxonomies/mail").json()["version"] == 2
    problem(client.put("/v1/taxonomies/mail", json={"labels": [{"name": "a"}, {"name": "a"}]}), 422)
    r = client.post("/v1/documents", json={"text": "win a prize", "taxonomy": "mail"})
    doc = client.get(f"/v1/documents/{r.json()['data'][0]['id']}").json()
    assert (doc["taxonomy"], doc["taxonomy_version"]) == ("mail", 2)


def test_health_and_costs_when_empty(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "pid": os.getpid()}
    ready = client.get("/readyz")
    assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["redis"] == "ok"
    assert ready.json()["checks"]["reconciler"] == "not seen yet"  # no worker in this test
    costs = client.get("/v1/costs").json()
    assert costs["documents"] == 0 and costs["cost_usd"] == 0 and costs["by_tier"] == []
    assert costs["requests"] == {"answered": 0, "failed": 0, "in_flight": 0}
    assert costs["unanswered_requests"] == {"requests": 0, "cost_usd": 0.0, "estimated": True}
    assert costs["spend"]["spent_usd"] == 0 and costs["spend"]["daily_cap_usd"] is None


def test_documents_are_stored_even_when_redis_is_down(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, "redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/documents", json={"text": "stored anyway"})
        assert r.status_code == 202 and r.json()["queued"] is False
        assert c.get(f"/v1/documents/{r.json()['data'][0]['id']}").json()["status"] == "queued"


def test_import_endpoints_outside_the_allow_list_are_403(
    tmp_path: Path, database_url: str, fresh_redis: str
) -> None:
    settings = make_settings(tmp_path, database_url, fresh_redis)
    settings.s3.endpoint_url = "http://s3.internal:8333"
    settings.s3.allowed_endpoints = ["http://minio.internal:9000"]
    with TestClient(create_app(settings)) as client:
        for url in ("http://169.254.169.254", "http://minio.internal:9001", "https://s3.internal:8333"):
            r = client.post("/v1/imports", json={"source": "s3://bucket/prefix", "endpoint_url": url})
            assert "s3.allowed_endpoints" in problem(r, 403), url
        for url in (None, "http://s3.internal:8333/", "http://minio.internal:9000"):
            r = client.post("/v1/imports", json={"source": "s3://bucket/prefix", "endpoint_url": url})
            assert r.status_code == 202, r.text
    settings.s3.allowed_endpoints = None  # development: any endpoint; production: only the configured one
    with TestClient(create_app(settings)) as client:
        body = {"source": "s3://bucket/prefix", "endpoint_url": "http://elsewhere:1"}
        assert client.post("/v1/imports", json=body).status_code == 202
    settings.env = "production"
    _check_endpoint("http://s3.internal:8333", settings)
    with pytest.raises(Forbidden):
        _check_endpoint("http://elsewhere:1", settings)


def test_uploaded_record_files_are_a_document_per_record(client: TestClient) -> None:
    lines = b'{"id": "r1", "text": "Rates were cut"}\n\n{"body": "A goal in extra time"}\n'
    csv_rows = b"title,text\nfirst,Shares fell\nsecond,The probe landed\n"
    files = [
        ("files", ("a.jsonl", io.BytesIO(lines), "application/x-ndjson")),
        ("files", ("b.csv", io.BytesIO(csv_rows), "text/csv")),
    ]
    r = client.post("/v1/documents", files=files, data={"mode": "document_per_line"})
    assert r.status_code == 202, r.text
    docs = [client.get(f"/v1/documents/{d['id']}").json() for d in r.json()["data"]]
    assert [(d["external_id"], d["text"]) for d in docs] == [
        ("r1", "Rates were cut"),
        ("a.jsonl#L2", "A goal in extra time"),
        ("b.csv#L1", "Shares fell"),
        ("b.csv#L2", "The probe landed"),
    ]
    assert docs[3]["metadata"] == {"filename": "b.csv", "line": 2}
    # Without the mode a record file is one document, its text as it is.
    whole = client.post("/v1/documents", files=[("files", ("c.jsonl", io.BytesIO(lines), "text/plain"))])
    assert client.get(f"/v1/documents/{whole.json()['data'][0]['id']}").json()["text"] == lines.decode()
    broken = b'{"text": "fine"}\n{not json\n'
    bad = client.post(
        "/v1/documents",
        files=[("files", ("d.jsonl", io.BytesIO(broken), "text/plain"))],
        data={"mode": "document_per_line"},
    )
    assert "d.jsonl record 2: unreadable: invalid JSON" in problem(bad, 422)
    wrong_mode = client.post(
        "/v1/documents", files=[("files", ("e.txt", io.BytesIO(b"x"), "text/plain"))], data={"mode": "rows"}
    )
    assert "mode must be" in problem(wrong_mode, 422)
