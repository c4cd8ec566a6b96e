"""Hardening: bad input gets a clear 4xx, secrets stay out of logs, bodies, tasks and Flower, and a
database outage is a 503 with Retry-After that leaves nothing half written. Real SQLite, PostgreSQL,
Redis and Flower processes."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from api.main import create_app
from core.config import FlowerSettings, Settings
from core.logs import MASK, setup_logging
from core.secrets import mask_url, secret_values
from core.tiers import ModelTier
from docsort.services import app_services, free_port
from store import keys
from store.db import session_scope
from tests.conftest import PG_ADMIN, make_settings, offline_tiers
from worker.app import create_celery

MODEL_KEY = "sk-proj-" + "Qz7" * 12
FLOWER_PASSWORD = "flower-" + "Wd4" * 6
DB_PASSWORD = "pg-" + "Rt9" * 6
REDIS_PASSWORD = "redis-" + "Hm2" * 6
SECRETS = (MODEL_KEY, FLOWER_PASSWORD, DB_PASSWORD, REDIS_PASSWORD)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    return body


# --- bad input --------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path, database_url: str, fresh_redis: str) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, database_url, fresh_redis)
    settings.api.max_document_bytes = 2000
    settings.api.max_request_bytes = 8_000
    settings.api.max_documents_per_request = 5
    settings.api.max_files_per_upload = 2
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_every_limit_is_a_413_naming_it(client: TestClient) -> None:
    assert problem(client.post("/v1/documents", json={"text": "x" * 2001}), 413)["limit"] == 2000
    many = {"documents": [{"text": f"d{i}"} for i in range(6)]}
    assert problem(client.post("/v1/documents", json=many), 413)["limit"] == 5
    big = json.dumps({"documents": [{"text": "y" * 1900 + str(i)} for i in range(5)]}).encode()
    declared = client.post("/v1/documents", content=big, headers={"content-type": "application/json"})
    assert problem(declared, 413)["limit"] == 8_000
    # No Content-Length (chunked): counted as it arrives, on every route, FastAPI-parsed ones too.
    chunked = client.post(
        "/v1/documents", content=iter([big[:5000], big[5000:]]), headers={"content-type": "application/json"}
    )
    assert "content-length" not in chunked.request.headers
    assert problem(chunked, 413)["limit"] == 8_000
    labels = {"labels": [{"name": f"l{i}", "description": "z" * 500} for i in range(30)]}
    taxonomy = json.dumps(labels).encode()
    put = client.put(
        "/v1/taxonomies/big", content=iter([taxonomy]), headers={"content-type": "application/json"}
    )
    assert problem(put, 413)["limit"] == 8_000
    files = [("files", (f"f{i}.txt", io.BytesIO(b"words"), "text/plain")) for i in range(3)]
    assert problem(client.post("/v1/documents", files=files), 413)["limit"] == 2
    one_big = [("files", ("big.txt", io.BytesIO(b"w" * 2001), "text/plain"))]
    assert problem(client.post("/v1/documents", files=one_big), 413)["limit"] == 2000
    assert client.get("/v1/documents").json()["count"] == 0  # nothing half stored


def test_bad_text_and_bad_json_are_422_naming_the_field(client: TestClient) -> None:
    for text in ("", "   \n\t "):
        assert "empty" in problem(client.post("/v1/documents", json={"text": text}), 422)["detail"]
    assert "text" in problem(client.post("/v1/documents", json={"text": ["a"]}), 422)["detail"]
    assert (
        "external_id"
        in problem(client.post("/v1/documents", json={"text": "a", "external_id": 7}), 422)["detail"]
    )
    assert (
        "documents.0.text"
        in problem(client.post("/v1/documents", json={"documents": [{"text": 1}]}), 422)["detail"]
    )
    assert "labels" in problem(client.put("/v1/taxonomies/t", json={"labels": "spam"}), 422)["detail"]
    raw = {"content-type": "application/json"}
    for body in (b"{not json", b'{"text": "a"', b"", b"\xff\xfe\x00{", b'{"text": "x\\ud800"}'):
        problem(client.post("/v1/documents", content=body, headers=raw), 422)
        problem(client.put("/v1/taxonomies/t", content=body, headers=raw), 422)
    for body in (b'{"text": "a", "metadata": {"k": NaN}}', b'{"text": "a", "metadata": {"k": 1e999}}'):
        assert "number" in problem(client.post("/v1/documents", content=body, headers=raw), 422)["detail"]
    deep = b'{"text": "a", "metadata": {"k": ' + b"[" * 3000 + b"]" * 3000 + b"}}"
    assert "deeply" in problem(client.post("/v1/documents", content=deep, headers=raw), 422)["detail"]
    assert client.get("/v1/documents").json()["count"] == 0


def test_content_types_and_encodings(client: TestClient) -> None:
    for content_type in ("text/plain", "application/xml", "application/x-www-form-urlencoded", ""):
        r = client.post("/v1/documents", content=b"text=hello", headers={"content-type": content_type})
        problem(r, 415)
    exe = [("files", ("a.exe", io.BytesIO(b"MZ"), "application/octet-stream"))]
    assert ".exe" in problem(client.post("/v1/documents", files=exe), 415)["detail"]
    latin1 = [("files", ("l.txt", io.BytesIO("café".encode("latin-1")), "text/plain"))]
    assert "UTF-8 or UTF-16" in problem(client.post("/v1/documents", files=latin1), 422)["detail"]
    blank = [("files", ("b.txt", io.BytesIO(b"  \n"), "text/plain"))]
    assert "empty" in problem(client.post("/v1/documents", files=blank), 422)["detail"]
    assert client.get("/v1/documents").json()["count"] == 0
    # The stated policy: UTF-8 (BOM allowed) or UTF-16 with a BOM are decoded, nothing else guessed.
    ok = [
        ("files", ("u16.txt", io.BytesIO("Zürich wins".encode("utf-16")), "text/plain")),
        ("files", ("bom.txt", io.BytesIO(b"\xef\xbb\xbfRates rise"), "text/plain")),
    ]
    r = client.post("/v1/documents", files=ok)
    assert r.status_code == 202, r.text
    docs = client.get("/v1/documents").json()["data"]
    assert [d["external_id"] for d in docs] == ["u16.txt", "bom.txt"]


def test_query_and_path_parameters_are_checked(client: TestClient, database_url: str) -> None:
    for params in (
        {"limit": 0},
        {"limit": "x"},
        {"limit": 1001},
        {"cursor": -1},
        {"cursor": 2**64},
        {"status": "nope"},
    ):
        problem(client.get("/v1/documents", params=params), 422)
    for path in ("/v1/documents/0", "/v1/documents/abc", f"/v1/documents/{2**64}", "/v1/taxonomies/%20bad"):
        problem(client.get(path), 422)
    # SQLite stores NUL; PostgreSQL refuses it in text columns, which is a 422, never a 500.
    postgres = database_url.startswith("postgresql")
    r = client.get("/v1/documents", params={"label": "a\x00b"})
    assert r.status_code == (422 if postgres else 200), r.text
    r = client.post("/v1/documents", json={"text": "fine", "external_id": "a\x00b"})
    assert r.status_code == (422 if postgres else 202), r.text
    assert client.post("/v1/documents", json={"text": "x"}, headers={"x-extra": "1"}).status_code == 202
    problem(client.delete("/v1/documents"), 405)


# --- secrets ----------------------------------------------------------------------------------


@pytest.fixture
def docsort_log() -> Iterator[io.StringIO]:
    """docsort's own log handler (as setup_logging installs it), writing to a buffer."""
    logger = logging.getLogger("docsort")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    stream = io.StringIO()
    yield stream
    logger.handlers[:], logger.level, logger.propagate = saved


def secret_settings(tmp_path: Path, **kw: Any) -> Settings:
    tiers = [tier.model_copy(update={"api_key": SecretStr(MODEL_KEY)}) for tier in offline_tiers(1)]
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": f"postgresql+psycopg://docsort:{DB_PASSWORD}@db.internal/docsort",
        "redis_url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0",
        "models": tiers,
        "flower": FlowerSettings(password=FLOWER_PASSWORD),
    }
    values.update(kw)
    return Settings(**values)


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret leaked: ...{secret[-6:]}"


def test_settings_never_show_their_secrets(tmp_path: Path) -> None:
    settings = secret_settings(tmp_path)
    assert set(secret_values(settings).values()) == set(SECRETS)
    assert_clean(repr(settings) + str(settings) + settings.model_dump_json() + repr(settings.models))
    assert mask_url(settings.db_url) == "postgresql+psycopg://docsort:***@db.internal/docsort"
    with pytest.raises(ValidationError) as info:  # a start-up error does not echo its input
        Settings(env="production", database_url=settings.db_url, flower={"password": FLOWER_PASSWORD})
    assert_clean(str(info.value))


def test_logs_mask_secrets_in_messages_extras_and_tracebacks(
    tmp_path: Path, docsort_log: io.StringIO
) -> None:
    for log_json in (True, False):
        settings = secret_settings(tmp_path, log_json=log_json)
        setup_logging(settings)
        logging.getLogger("docsort").handlers[0].setStream(docsort_log)  # type: ignore[attr-defined]
        log = logging.getLogger("docsort.test")
        tier = settings.models[0]
        log.info("calling %s with key %s", tier.base_url, tier.api_key.get_secret_value())
        log.warning(
            "extras", extra={"key": tier.api_key, "tier": tier, "settings": settings, "pw": FLOWER_PASSWORD}
        )
        try:
            raise RuntimeError(f"connect failed for {settings.db_url} and redis {settings.redis_url}")
        except RuntimeError:
            log.exception("with a traceback")
    text = docsort_log.getvalue()
    assert text.count(MASK) >= 6 and "calling" in text and "with a traceback" in text
    assert_clean(text)
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines and all(line["logger"] == "docsort.test" for line in lines)


def test_error_bodies_readiness_and_tasks_carry_no_secret(
    tmp_path: Path, fresh_redis: str, docsort_log: io.StringIO
) -> None:
    import redis

    settings = secret_settings(
        tmp_path, database_url=f"sqlite:///{tmp_path / 'd.db'}", redis_url=fresh_redis, log_json=True
    )
    settings.api.require_auth = True
    setup_logging(settings)
    logging.getLogger("docsort").handlers[0].setStream(docsort_log)  # type: ignore[attr-defined]
    app: FastAPI = create_app(settings)

    def boom() -> None:
        raise RuntimeError(f"model call failed with key {MODEL_KEY}")

    app.add_api_route("/boom", boom)
    with session_scope(app.state.engine) as session:
        _, key = keys.create_key(session=session, name="t")
    text = "A confidential memo about the quarterly merger talks."
    with TestClient(app, raise_server_exceptions=False) as c:
        auth = {"Authorization": f"Bearer {key}"}
        bodies = [c.get("/boom"), c.get("/readyz"), c.get("/v1/costs", headers={"Authorization": "Bearer x"})]
        assert [r.status_code for r in bodies] == [500, 503, 401]
        assert bodies[0].json()["detail"] == "internal error; it has been logged"
        posted = c.post("/v1/documents", json={"text": text}, headers=auth)
        assert posted.status_code == 202 and posted.json()["queued"] is True
        bodies.append(posted)
    assert_clean("".join(r.text for r in bodies) + docsort_log.getvalue())
    assert MASK in docsort_log.getvalue()  # the traceback was logged, with the key masked
    # Everything the API put on the broker: task names and ids, never text, keys or secrets.
    r = redis.Redis.from_url(fresh_redis)
    stored = b""
    messages = []
    for name in r.keys("*"):
        kind = r.type(name)
        values = (
            r.lrange(name, 0, -1)
            if kind == b"list"
            else list(r.hgetall(name).values())
            if kind == b"hash"
            else []
        )
        stored += b"".join(values)
        messages += [json.loads(v) for v in values if v.startswith(b"{")] if kind == b"list" else []
    assert messages, "the API queued nothing"
    for message in messages:
        args = json.loads(base64.b64decode(message["body"]))[0]
        assert message["headers"]["task"] == "docsort.dispatch" and args == ["small"]
    dump = stored.decode("utf-8", "replace")
    assert_clean(dump)
    assert text not in dump and key not in dump
    # What Flower shows of the Celery app (its configuration, the broker) is censored by Celery.
    celery = create_celery(secret_settings(tmp_path))
    shown = (
        json.dumps(celery.conf.humanize(with_defaults=False, censored=True)) + celery.connection().as_uri()
    )
    assert_clean(shown)


def test_production_refuses_placeholder_secrets(tmp_path: Path) -> None:
    real = {
        "env": "production",
        "data_dir": tmp_path,
        "models": offline_tiers(1),
        "flower": {"password": FLOWER_PASSWORD},
        "api": {"require_auth": True},
    }
    Settings(**real)  # real secrets: fine
    Settings(data_dir=tmp_path, models=offline_tiers(1))  # development: the defaults are fine
    hosted = ModelTier(name="small", api_key=SecretStr("not-needed"))
    bad: list[tuple[dict[str, Any], str]] = [
        ({"flower": {"password": "docsort"}}, "flower.password"),
        ({"flower": {"password": ""}}, "flower.password"),
        (
            {
                "models": [
                    tier.model_copy(update={"api_key": SecretStr("sk-...")}) for tier in offline_tiers(1)
                ]
            },
            "models[0].api_key",
        ),
        ({"models": [hosted]}, "models[0].api_key"),
        ({"database_url": "postgresql+psycopg://docsort:changeme@db/docsort"}, "database_url.password"),
        ({"redis_url": "redis://:password@redis:6379/0"}, "redis_url.password"),
        ({"api": {"require_auth": False}}, "require_auth"),
    ]
    for change, named in bad:
        with pytest.raises(ValidationError) as info:
            Settings(**{**real, **change})
        assert named in str(info.value)


def test_flower_always_asks_for_the_password(tmp_path: Path, redis_url: str) -> None:
    """Flower as docsort starts it: basic auth from settings, the password never on its command line."""
    import subprocess

    settings = make_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'f.db'}",
        redis_url,
        flower=FlowerSettings(port=free_port(), password=FLOWER_PASSWORD),
    )
    [flower] = [s for s in app_services(settings) if s.name == "flower"]
    assert not any(FLOWER_PASSWORD in arg for arg in flower.argv)
    env = {
        **os.environ,
        **flower.env,
        "DOCSORT_DATA_DIR": str(settings.data_dir),
        "DOCSORT_DATABASE_URL": settings.db_url,
    }
    process = subprocess.Popen(
        flower.argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    base = f"http://{settings.flower.host}:{settings.flower.port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{base}/healthcheck", timeout=2)
                break
            except httpx.HTTPError:
                assert process.poll() is None, "flower exited"
                time.sleep(0.5)
        for page in ("/", "/workers", "/tasks", "/api/workers", "/broker"):
            assert httpx.get(base + page, timeout=10).status_code == 401, page
            assert httpx.get(base + page, auth=("docsort", "docsort"), timeout=10).status_code == 401, page
        ok = httpx.get(base + "/workers", auth=("docsort", FLOWER_PASSWORD), timeout=10)
        assert ok.status_code == 200
        assert_clean(ok.text)
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode(errors="replace")
        assert FLOWER_PASSWORD not in cmdline
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


# --- the database goes away -------------------------------------------------------------------


def _admin() -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")


def _count(url: str) -> int:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        count = int(conn.execute(sqlalchemy.text("SELECT count(*) FROM document")).scalar_one())
    engine.dispose()
    return count


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_database_unreachable_is_503_with_retry_after(
    tmp_path: Path, database_url: str, fresh_redis: str
) -> None:
    """PostgreSQL stops accepting connections and drops the open ones; then comes back."""
    settings = make_settings(tmp_path, database_url, fresh_redis)
    settings.api.require_auth = True
    name = database_url.rsplit("/", 1)[1]
    admin = _admin()
    app = create_app(settings)
    with session_scope(app.state.engine) as session:
        _, key = keys.create_key(session=session, name="t")
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            assert c.post("/v1/documents", json={"text": "before"}, headers=auth).status_code == 202
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                conn.execute(
                    sqlalchemy.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                    ),
                    {"n": name},
                )
            for response in (
                c.post(
                    "/v1/documents",
                    json={"documents": [{"text": "during 1"}, {"text": "during 2"}]},
                    headers=auth,
                ),
                c.get("/v1/documents", headers=auth),
                c.get("/v1/costs", headers=auth),
            ):
                body = problem(response, 503)
                assert response.headers["retry-after"].isdigit() and "nothing was stored" in body["detail"]
            assert c.get("/healthz").status_code == 200
            assert c.get("/readyz").json()["checks"]["database"].startswith("down")
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            assert c.post("/v1/documents", json={"text": "after"}, headers=auth).status_code == 202
            assert c.get("/v1/documents", headers=auth).json()["count"] == 2
        assert _count(database_url) == 2  # before and after; nothing from the outage
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        app.state.engine.dispose()
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_connection_lost_mid_write_leaves_nothing_half_written(
    tmp_path: Path, database_url: str, fresh_redis: str
) -> None:
    """The server kills the connection after a request's first rows are written, before its commit."""
    settings = make_settings(tmp_path, database_url, fresh_redis)
    app = create_app(settings)
    engine = sqlalchemy.create_engine(database_url)
    trigger = f"die_{uuid.uuid4().hex[:8]}"
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            assert (
                c.put("/v1/taxonomies/mail", json={"labels": [{"name": "spam"}, {"name": "ham"}]}).status_code
                == 200
            )
            with engine.begin() as conn:
                conn.execute(
                    sqlalchemy.text(
                        f"CREATE FUNCTION {trigger}() RETURNS trigger AS $$ BEGIN "
                        "IF NEW.taxonomy = 'mail' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; "
                        f"RETURN NEW; END $$ LANGUAGE plpgsql; CREATE TRIGGER {trigger} BEFORE INSERT ON document "
                        f"FOR EACH ROW EXECUTE FUNCTION {trigger}()"
                    )
                )
            # "news" rows are inserted first, then the "mail" row kills the connection.
            body = {
                "documents": [
                    {"text": "news one"},
                    {"text": "news two"},
                    {"text": "a mail", "taxonomy": "mail"},
                ]
            }
            response = c.post("/v1/documents", json=body)
            problem(response, 503)
            assert response.headers["retry-after"].isdigit()
            assert _count(database_url) == 0  # the first group's rows went with the transaction
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text(f"DROP TRIGGER {trigger} ON document"))
            retried = c.post("/v1/documents", json=body)
            assert retried.status_code == 202, retried.text  # the pool recovered; the retry stores all
            assert [d["duplicate"] for d in retried.json()["data"]] == [False, False, False]
        assert _count(database_url) == 3
    finally:
        app.state.engine.dispose()
        engine.dispose()
