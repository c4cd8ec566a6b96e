"""API keys: made by the CLI, stored as hashes, required on every route but health and docs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from sqlmodel import select

from api.main import create_app
from store import keys
from store.db import session_scope
from store.models import ApiKey
from tests.conftest import make_settings

PROTECTED = [
    ("GET", "/v1/documents"),
    ("GET", "/v1/documents/1"),
    ("POST", "/v1/documents"),
    ("GET", "/v1/costs"),
    ("GET", "/v1/taxonomies/news"),
    ("PUT", "/v1/taxonomies/mail"),
]


@pytest.fixture
def secured(tmp_path: Path, database_url: str, fresh_redis: str) -> Iterator[tuple[TestClient, str]]:
    """An app with require_auth on, and one live key for it."""
    settings = make_settings(tmp_path, database_url, fresh_redis)
    settings.api.require_auth = True
    app = create_app(settings)
    with session_scope(app.state.engine) as session:
        _, key = keys.create_key(session=session, name="tests")
    with TestClient(app) as client:
        yield client, key


def rejected(response, key_hint: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"] == "Bearer"
    assert key_hint not in response.text and "tests" not in response.text  # no hint of existing keys
    body: dict[str, object] = response.json()
    return body


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_v1_route_needs_a_key(secured: tuple[TestClient, str], method: str, path: str) -> None:
    client, key = secured
    missing = rejected(client.request(method, path), key[:12])
    wrong = rejected(
        client.request(method, path, headers={"Authorization": "Bearer dsk_" + "A" * 43}), key[:12]
    )
    near = rejected(client.request(method, path, headers={"Authorization": f"Bearer {key[:-1]}x"}), key[:12])
    basic = rejected(client.request(method, path, headers={"Authorization": f"Basic {key}"}), key[:12])
    assert missing == wrong == near == basic  # one answer for every failure


def test_a_valid_key_opens_the_api_and_revoking_closes_it(
    secured: tuple[TestClient, str], caplog: pytest.LogCaptureFixture
) -> None:
    client, key = secured
    auth = {"Authorization": f"Bearer {key}"}
    r = client.post("/v1/documents", json={"text": "Markets rally"}, headers=auth)
    assert r.status_code == 202, r.text
    assert client.get(f"/v1/documents/{r.json()['data'][0]['id']}", headers=auth).status_code == 200
    assert client.get("/v1/costs", headers=auth).status_code == 200
    with session_scope(client.app.state.engine) as session:  # type: ignore[attr-defined]
        keys.revoke_key(session=session, ident=key[:12])
    rejected(client.get("/v1/costs", headers=auth), key[:12])
    assert key not in caplog.text and key[4:20] not in caplog.text


def test_health_and_docs_need_no_key(secured: tuple[TestClient, str]) -> None:
    client, _ = secured
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")  # no key needed, and nothing listens on the tiers' port 1 here
    assert ready.status_code == 503, ready.text
    checks = ready.json()["checks"]
    assert checks["database"] == "ok" and checks["redis"] == "ok"
    assert checks["model:small"].startswith("down") and checks["model:large"].startswith("down")
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/costs"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "401" in schema["paths"]["/v1/costs"]["get"]["responses"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_only_a_hash_is_stored(tmp_path: Path, database_url: str) -> None:
    from store.db import make_engine, migrate

    migrate(database_url)
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        row, key = keys.create_key(session=session, name="ci")
        other, _ = keys.create_key(session=session, name="ci")
    assert key.startswith("dsk_") and len(key) >= 40 and row.prefix == key[:12]
    with engine.connect() as conn:
        dump = repr(conn.execute(sqlalchemy.text("SELECT * FROM apikey")).all())
    assert key not in dump and key[12:] not in dump
    assert hashlib.sha256(key.encode()).hexdigest() in dump
    with session_scope(engine) as session:
        found = keys.verify_key(session=session, key=key)
        assert found is not None and found.id == row.id
        assert keys.verify_key(session=session, key=key + "x") is None
        assert keys.verify_key(session=session, key="") is None
        assert keys.find_key(session=session, ident=str(other.id)).id == other.id
        keys.revoke_key(session=session, ident=str(row.id))
        assert keys.verify_key(session=session, key=key) is None
        assert len(session.exec(select(ApiKey)).all()) == 2
    engine.dispose()


def test_auth_off_in_development_keeps_the_api_open(tmp_path: Path, fresh_redis: str) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'd.db'}", fresh_redis)
    assert settings.env == "development" and settings.api.require_auth is False
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/costs").status_code == 200
        assert "security" not in client.get("/openapi.json").json()["paths"]["/v1/costs"]["get"]


def test_cli_creates_lists_and_revokes_keys(tmp_path: Path, fresh_redis: str) -> None:
    """`docsort keys ...` as a user runs it; the key it prints opens the API until revoked."""
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "DOCSORT_DATABASE_URL": db, "DOCSORT_DATA_DIR": str(tmp_path / "data")}
    env.pop("OPENAI_API_KEY", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "docsort.cli", "keys", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    made = cli("create", "--name", "reporting")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("dsk_")
    listing = cli("list")
    assert "reporting" in listing.stdout and key[:12] in listing.stdout and key[12:] not in listing.stdout
    settings = make_settings(tmp_path, db, fresh_redis)
    settings.api.require_auth = True
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": f"Bearer {key}"}
        assert client.get("/v1/costs", headers=auth).status_code == 200
        assert cli("revoke", key[:12]).returncode == 0
        assert client.get("/v1/costs", headers=auth).status_code == 401
    assert cli("revoke", "dsk_nothing").returncode == 1
