"""The cascade under bad answers, injected at the HTTP seam (tests/fakes.py)."""

from __future__ import annotations

import httpx2
import pytest

from classifiers.ledger import MemoryLedger
from classifiers.llm_runner import LLMRunner
from classifiers.packing import DocIn
from classifiers.runners import RunnerSpec, build_runner
from classifiers.taxonomy import Taxonomy
from core.errors import PermanentModelError, RateLimited, TransientModelError
from core.taxonomy_spec import default_taxonomy
from core.tiers import GPT_4O_MINI, ModelTier
from core.vocab import Outcome
from tests.fakes import ScriptedEndpoint, answer, chat, label_all

DOCS = [DocIn(10, "alpha news"), DocIn(11, "beta match"), DocIn(12, "gamma market")]


def runner(endpoint: ScriptedEndpoint, *, is_last: bool = False, **tier: object) -> LLMRunner:
    values: dict[str, object] = {
        "name": "small",
        "base_url": "http://fake/v1",
        "model": "fake",
        "transport": "tools",
        "confidence": "stated",
        "price": GPT_4O_MINI,
        "threshold": 0.5,
        "max_retries": 0,
        "max_reasks": 2,
        "tokenizer": "approx",
    }
    values.update(tier)
    built = build_runner(
        RunnerSpec(
            tier=ModelTier(**values),  # type: ignore[arg-type]
            taxonomy=Taxonomy(**default_taxonomy().model_dump()),
            is_last=is_last,
            http_client=endpoint.client(),
        )
    )
    assert isinstance(built, LLMRunner)
    return built


def test_a_good_batch_is_one_request() -> None:
    endpoint = ScriptedEndpoint(label_all("Sports"))
    decisions = runner(endpoint, transport="json_schema").run(DOCS)
    assert len(endpoint.requests) == 1
    assert [d.outcome for d in decisions] == [Outcome.accepted] * 3
    assert all(d.label == "Sports" for d in decisions)
    assert endpoint.requests[0]["response_format"]["json_schema"]["strict"] is True


def test_missing_and_invalid_refs_are_asked_again_alone_and_all_tries_are_counted() -> None:
    first = answer(
        [
            {"ref": 1, "label": "World", "confidence": 0.9},
            {"ref": 2, "label": "Weather", "confidence": 0.9},
        ],
        prompt_tokens=300,
        completion_tokens=30,
    )
    endpoint = ScriptedEndpoint(first, label_all("Business"))
    decisions = runner(endpoint).run(DOCS)
    assert len(endpoint.requests) == 3  # the batch, then refs 2 and 3 alone
    by_id = {d.doc_id: d for d in decisions}
    assert by_id[10].label == "World" and len(by_id[10].attempts) == 1
    for doc_id in (11, 12):
        outcomes = [a.outcome for a in by_id[doc_id].attempts]
        assert outcomes == ["invalid", "accepted"]
        assert by_id[doc_id].label == "Business"
    tokens = sum(a.usage.input_tokens for d in decisions for a in d.attempts)
    assert tokens == 300 + 100 + 100  # every request's tokens, shared out, none lost


def test_garbage_forever_escalates_then_reviews_with_costs_recorded() -> None:
    endpoint = ScriptedEndpoint(chat("this is not json {"))
    decisions = runner(endpoint).run(DOCS[:1])
    assert decisions[0].outcome is Outcome.escalated
    assert len(decisions[0].attempts) == 3  # one try + two re-asks
    assert all(a.cost_nanousd > 0 for a in decisions[0].attempts)
    last = runner(ScriptedEndpoint(chat("")), is_last=True).run(DOCS[:1])
    assert last[0].outcome is Outcome.review


def test_duplicate_ref_is_not_trusted() -> None:
    twice = answer(
        [
            {"ref": 1, "label": "World", "confidence": 1},
            {"ref": 1, "label": "Sports", "confidence": 1},
        ]
    )
    endpoint = ScriptedEndpoint(twice, label_all("Sports"))
    decisions = runner(endpoint).run(DOCS[:1])
    assert decisions[0].label == "Sports" and len(endpoint.requests) == 2


def test_low_confidence_escalates_and_last_tier_reviews() -> None:
    assert runner(ScriptedEndpoint(label_all("World", 0.2))).run(DOCS[:1])[0].outcome is Outcome.escalated
    assert (
        runner(ScriptedEndpoint(label_all("World", 0.2)), is_last=True).run(DOCS[:1])[0].outcome
        is Outcome.review
    )


def test_429_surfaces_with_its_retry_after_on_any_pass_and_is_not_billed() -> None:
    limited = httpx2.Response(429, headers={"retry-after": "7"}, json={"error": {"message": "slow down"}})
    endpoint = ScriptedEndpoint(limited, label_all("World"))
    ledger = MemoryLedger()
    with pytest.raises(RateLimited) as caught:
        runner(endpoint).run(DOCS[:1], ledger)
    # docsort retries (the task waits Retry-After), never the client: one request, in the books
    assert caught.value.retry_after == 7 and len(endpoint.requests) == 1
    assert [r.id for r in ledger.planned] == list(ledger.failures) == endpoint.request_ids
    assert not ledger.failures[ledger.planned[0].id].unanswered  # an error answer: not billed
    # A re-ask that meets a 429 waits like the first pass: it neither escalates nor counts as invalid.
    endpoint = ScriptedEndpoint(answer([]), limited)
    with pytest.raises(RateLimited):
        runner(endpoint).run(DOCS[:1])
    assert len(endpoint.requests) == 2


def test_a_truncated_body_is_an_unanswered_request_and_is_asked_again() -> None:
    whole = label_all("World")({"messages": [{"content": "refs 1. x"}]}).content
    cut = httpx2.Response(200, content=whole[: len(whole) // 2], headers={"content-type": "application/json"})
    endpoint = ScriptedEndpoint(cut, label_all("World"))
    ledger = MemoryLedger()
    decisions = runner(endpoint).run(DOCS[:2], ledger)
    assert [d.label for d in decisions] == ["World", "World"] and len(endpoint.requests) == 3
    assert [r.id for r in ledger.unanswered] == [endpoint.request_ids[0]]  # billed, usage unknown
    assert ledger.unanswered[0].estimate_nanousd > 0
    assert all(
        d.attempts[0].outcome == "invalid" and d.attempts[0].request_id == endpoint.request_ids[0]
        for d in decisions
    )


def test_transient_and_permanent_errors_surface_as_such() -> None:
    down = httpx2.Response(503, json={"error": {"message": "overloaded"}})
    with pytest.raises(TransientModelError):
        runner(ScriptedEndpoint(down)).run(DOCS[:1])
    bad = httpx2.Response(401, json={"error": {"message": "bad key"}})
    with pytest.raises(PermanentModelError):
        runner(ScriptedEndpoint(bad)).run(DOCS[:1])
