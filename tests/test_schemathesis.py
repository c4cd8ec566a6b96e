"""Property-based: schemathesis drives the API from its own OpenAPI schema (real SQLite, real Redis).

Every operation in the schema (routes added later included) gets generated valid and invalid
requests, with auth on and a real key. No answer may be a 5xx, and every answer must fit the schema:
a declared status, content type, body shape and headers, a 401 when the key is dropped, 405 with
`Allow` for undeclared methods, and invalid input refused with a 4xx.

One check is off: `positive_data_acceptance` (schema-valid input must get 2xx). Some refusals depend
on what JSON Schema cannot say: text that is only whitespace, files that are not UTF-8 or not a
supported type, limits from settings. Those answers are declared 4xx problems and checked as such.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from api.main import create_app
from store import keys
from store.db import session_scope
from tests.conftest import make_settings

MAX_EXAMPLES = 30  # per operation and mode
# Unknown query parameters are ignored, on purpose (clients may send newer ones), so generation
# does not add them; `{key}` is filled with a real key, which schemathesis drops to test the 401.
CONFIG = """
[generation]
allow-extra-parameters = false

[checks]
positive_data_acceptance.enabled = false
negative_data_rejection.expected-statuses = [400, 401, 404, 405, 409, 413, 415, 422]

[auth.openapi.HTTPBearer]
bearer = "{key}"
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[FastAPI, str]]:
    """The app with auth on and small byte limits, a key for it; SQLite and the session's Redis (db 15)."""
    import redis

    tmp = tmp_path_factory.mktemp("schemathesis")
    redis_db = redis_url.rsplit("/", 1)[0] + "/15"
    redis.Redis.from_url(redis_db).flushdb()
    config = make_settings(tmp, f"sqlite:///{tmp / 'docsort.db'}", redis_db)
    config.api.require_auth = True
    config.api.max_document_bytes = 4000
    config.api.max_request_bytes = 100_000
    app = create_app(config)
    with session_scope(app.state.engine) as session:
        _, key = keys.create_key(session=session, name="schemathesis")
    with TestClient(app):  # runs the lifespan
        yield app, key


@pytest.fixture(scope="module")
def api_schema(api: tuple[FastAPI, str]) -> Any:
    app, key = api
    config = schemathesis.Config.from_str(CONFIG.replace("{key}", key))
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


def _run(operation: Any, mode: GenerationMode, seen: Counter[int]) -> None:
    readiness = operation.path == "/readyz"  # 503 there is the contract: no model endpoint runs here

    # Each request content type (JSON and multipart for POST /v1/documents) gets its own examples.
    media_types = operation.get_request_payload_content_types() or [None]
    strategies = [operation.as_strategy(mode, media_type=media_type) for media_type in media_types]

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every run: CI must not pass or fail by chance
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(excluded_checks=[not_a_server_error] if readiness else None)
        seen[response.status_code] += 1
        assert response.status_code < 500 or (readiness and response.status_code == 503), response.text

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # nothing to make invalid (no parameters, no body)


# schemathesis.pytest.from_fixture does not run under pytest 9 (it sets Function._nodeid), so the
# test walks the schema's operations itself and drives schemathesis' Hypothesis strategy for each.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_operation_conforms_to_the_schema(
    api: tuple[FastAPI, str], api_schema: Any, mode: GenerationMode
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/documents", "/v1/costs", "/healthz"}
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = {}
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        statuses[label] = Counter()
        try:
            _run(operation, mode, statuses[label])
        except Exception as exc:  # gather every operation's failure, not only the first
            failures.append(f"{label}:\n{exc}")
    assert not failures, "\n\n".join(failures)
    print({label: dict(seen) for label, seen in statuses.items()})
    if mode is GenerationMode.POSITIVE:  # the key works: requests get past auth to the routes
        for label in (
            "POST /v1/documents",
            "GET /v1/documents",
            "GET /v1/costs",
            "PUT /v1/taxonomies/{name}",
        ):
            assert any(200 <= code < 300 for code in statuses[label]), (label, statuses[label])
