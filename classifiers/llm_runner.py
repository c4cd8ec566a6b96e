"""An LLM tier's pass over documents: pack, ask, validate, re-ask, score confidence, decide."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from classifiers.confidence import TokenLogprob, label_confidence, stated_confidence
from classifiers.costs import Usage, cost_nanousd, split, split_usage
from classifiers.decision import AttemptRecord, Decision, Ledger, PlannedRequest, unsure
from classifiers.ledger import MemoryLedger, plan
from classifiers.packing import DocIn, Packed, pack, renumber, system_prompt, user_prompt
from classifiers.providers.base import ChatModel, Completion
from classifiers.taxonomy import Taxonomy, answer_models
from classifiers.tokens import Tokenizer
from core.errors import InvalidAnswer, ModelError, PermanentModelError, SpendCapReached
from core.tiers import Price
from core.vocab import Outcome

Calibrator = Callable[[float], float]


@dataclass(frozen=True)
class Prepared:
    """A request ready to send: its plan (id, prices), its documents, the prompt and the answer's length."""

    request: PlannedRequest
    batch: list[Packed]
    user: str
    max_tokens: int


@dataclass
class Answer:
    """A valid answer for one document: its label(s), raw confidence and how that was measured."""

    label: str | None
    labels: list[str] | None
    raw_confidence: float | None
    method: str


@dataclass
class LLMRunner:
    """Everything an LLM tier needs to classify; build once, call for each batch."""

    taxonomy: Taxonomy
    model: ChatModel
    tokenizer: Tokenizer
    calibrate: Calibrator | None = None
    is_last: bool = False
    reference_price: Price | None = None
    tag_key: bytes | None = None  # fences documents with a keyed tag (packing.fence_tag), else random

    def __post_init__(self) -> None:
        tier = self.model.tier
        self.label_only = tier.transport == "label_only"
        if self.label_only and self.taxonomy.multi_label:
            raise PermanentModelError(f"{tier.name}: label_only cannot answer multi-label taxonomies")
        self.use_logprobs = tier.confidence == "label_logprobs" and self.model.gives_logprobs
        self.item_model, self.batch_model = answer_models(
            self.taxonomy, stated_confidence=not self.use_logprobs
        )
        self.system = system_prompt(self.taxonomy)
        self.system_tokens = len(self.tokenizer.encode(self.system))  # the same in every request

    def run(self, docs: list[DocIn], ledger: Ledger | None = None, alone: bool = False) -> list[Decision]:
        """Classify docs with this tier; every doc comes back with a decision, none dropped.

        Each request is written in the ledger before it is sent and settled when its answer comes.
        Invalid or unreadable answers are asked again alone (max_reasks), then escalated; a spending
        cap holds the documents not yet answered. Transient and permanent errors propagate: the task
        retries (answers already paid for are in the ledger, and a retry does not buy them again).
        """
        tier = self.model.tier
        ledger = ledger or MemoryLedger()
        attempts: dict[int, list[AttemptRecord]] = {doc.id: [] for doc in docs}
        answers: dict[int, Answer] = {}
        missing: list[Packed] = []
        held: str | None = None
        batches = pack(
            docs,
            self.tokenizer,
            batch_size=1 if self.label_only or alone else tier.batch_size,
            request_token_budget=tier.request_token_budget,
            doc_token_budget=tier.doc_token_budget,
        )
        rounds = [("reask" if alone else "classify", batches)]
        for round_ in range(tier.max_reasks + 1):
            purpose, todo = rounds[-1]
            owed: list[Packed] = []
            for batch in todo:
                if held is not None:
                    break
                try:
                    owed += self._ask(batch, attempts, answers, ledger, purpose, round_)
                except SpendCapReached as exc:
                    held = str(exc)
            missing = owed
            if not missing or held is not None or round_ == tier.max_reasks:
                break
            rounds.append(("reask", [renumber([p]) for p in missing]))
        decisions = []
        for doc in docs:
            if held is not None and doc.id not in answers:
                decisions.append(
                    Decision(doc_id=doc.id, outcome=Outcome.held, attempts=attempts[doc.id], reason=held)
                )
            else:
                decisions.append(self._decide(doc.id, answers.get(doc.id), attempts[doc.id]))
        return decisions

    def prepare(self, docs: list[DocIn], attempt: int = 0) -> list[Prepared]:
        """The requests for docs, packed as the tier packs them (a batch's lines, say); attempt: how many
        times they were asked before (after the first, each document alone, as re-asks are)."""
        tier = self.model.tier
        alone = attempt > 0
        batches = pack(
            docs,
            self.tokenizer,
            batch_size=1 if self.label_only or alone else tier.batch_size,
            request_token_budget=tier.request_token_budget,
            doc_token_budget=tier.doc_token_budget,
        )
        return [self._prepare(batch, "reask" if alone else "classify", attempt) for batch in batches]

    def prepare_line(self, docs: list[DocIn], request_id: str, attempt: int = 0) -> Prepared:
        """The request of a stored Batch API line again (its documents, its id), to read its answer."""
        tier = self.model.tier
        [batch] = pack(
            docs,
            self.tokenizer,
            batch_size=len(docs),
            request_token_budget=sys.maxsize,
            doc_token_budget=tier.doc_token_budget,
        )
        prepared = self._prepare(batch, "reask" if attempt else "classify", attempt)
        return replace(prepared, request=replace(prepared.request, id=request_id))

    def _prepare(self, batch: list[Packed], purpose: str, attempt: int = 0) -> Prepared:
        tier = self.model.tier
        if self.label_only:
            user = (
                user_prompt(batch, self.taxonomy, self.tag_key, attempt)
                + "\nReply with exactly one of the allowed labels and nothing else."
            )
            max_tokens = 16
        else:
            user = user_prompt(batch, self.taxonomy, self.tag_key, attempt)
            max_tokens = min(tier.max_output_tokens * len(batch), 4096)
        request = plan(
            tier,
            purpose=purpose,
            doc_ids=[p.doc.id for p in batch],
            input_tokens=self.system_tokens + len(self.tokenizer.encode(user)),
            max_output_tokens=max_tokens,
        )
        return Prepared(request=request, batch=batch, user=user, max_tokens=max_tokens)

    def body(self, prepared: Prepared) -> dict[str, Any]:
        """The chat request of prepared as JSON (a Batch API line's body)."""
        return self.model.request_body(
            system=self.system,
            user=prepared.user,
            answer_model=self.batch_model,
            max_tokens=prepared.max_tokens,
            labels=self.taxonomy.label_names if self.label_only else None,
        )

    def _ask(
        self,
        batch: list[Packed],
        attempts: dict[int, list[AttemptRecord]],
        answers: dict[int, Answer],
        ledger: Ledger,
        purpose: str,
        attempt: int = 0,
    ) -> list[Packed]:
        """One request for batch, written in the ledger; records attempts and answers, returns those owed."""
        prepared = self._prepare(batch, purpose, attempt)
        request = prepared.request
        ledger.before(request)  # SpendCapReached: nothing is sent
        try:
            completion = self.model.complete(
                system=self.system,
                user=prepared.user,
                answer_model=self.batch_model,
                max_tokens=prepared.max_tokens,
                labels=self.taxonomy.label_names if self.label_only else None,
                request_id=request.id,
            )
        except InvalidAnswer as exc:  # the whole answer was unusable (a truncated body): each again
            ledger.failed(request, exc)
            for packed in batch:
                attempts[packed.doc.id].append(self.failed_attempt(packed, exc, request.id))
            return batch
        except ModelError as exc:
            ledger.failed(request, exc)
            raise
        missing, records, total = self.settle(prepared, completion, attempts, answers)
        ledger.answered(request, completion, total, records)
        return missing

    def settle(
        self,
        prepared: Prepared,
        completion: Completion,
        attempts: dict[int, list[AttemptRecord]],
        answers: dict[int, Answer],
        *,
        batched: bool = False,
    ) -> tuple[list[Packed], list[AttemptRecord], int]:
        """Read a completion of prepared: each document's attempt (its share of the cost, at Batch API
        prices when batched) and answer; returns the documents still owed, the attempts and the cost."""
        tier = self.model.tier
        batch = prepared.batch
        if self.label_only:
            parsed, error = self._parse_label(completion, batch[0].ref)
        else:
            parsed, error = self._parse(completion, batch)
        weights = [p.tokens + 1 for p in batch]
        usages = split_usage(completion.usage, weights)
        total = cost_nanousd(completion.usage, tier.price, batch_api=batched)
        costs = split(total, weights)
        refs = split(cost_nanousd(completion.usage, self.reference_price or tier.price), weights)
        missing = []
        records = []
        for p, usage, cost, ref_cost in zip(batch, usages, costs, refs, strict=True):
            record = AttemptRecord(
                doc_id=p.doc.id,
                tier=tier.name,
                model=completion.model or tier.model,
                request_id=prepared.request.id,
                usage=usage,
                cost_nanousd=cost,
                reference_nanousd=ref_cost,
                latency_ms=completion.latency_ms,
                written=True,  # by the ledger, with its request's answer
                batched=batched,
            )
            answer = parsed.get(p.ref)
            if answer is None:
                record.error = error or f"ref {p.ref} missing or invalid in the answer"
                missing.append(p)
            else:
                answers[p.doc.id] = answer
                record.label, record.labels = answer.label, answer.labels
                record.raw_confidence = answer.raw_confidence
                record.confidence = self._calibrated(answer.raw_confidence)
                record.confidence_method = answer.method
                record.outcome = self._outcome(record.confidence)
            attempts[p.doc.id].append(record)
            records.append(record)
        return missing, records, total

    def decide(self, doc_id: int, answer: Answer | None, attempts: list[AttemptRecord]) -> Decision:
        """A document's decision from its answer (if any) and attempts."""
        return self._decide(doc_id, answer, attempts)

    def _parse(self, completion: Completion, batch: list[Packed]) -> tuple[dict[int, Answer], str | None]:
        """Valid answers by ref; refs answered twice, unknown or off-taxonomy are left out."""
        try:
            payload = json.loads(completion.text)
            items = payload["results"]
            if not isinstance(items, list):
                raise TypeError("results is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            return {}, f"malformed answer: {type(exc).__name__}: {str(exc)[:200]}"
        wanted = {p.ref for p in batch}
        seen: dict[int, int] = {}
        valid: dict[int, tuple[int, BaseModel]] = {}
        for position, raw in enumerate(items):
            try:
                item = self.item_model.model_validate(raw)
            except ValidationError:
                continue
            ref = int(item.ref)  # type: ignore[attr-defined]
            seen[ref] = seen.get(ref, 0) + 1
            if ref in wanted:
                valid[ref] = (position, item)
        spans = self._label_spans(completion.text) if self.use_logprobs else []
        out = {}
        for ref, (position, item) in valid.items():
            if seen[ref] != 1:
                continue
            out[ref] = self._answer(item, completion, spans[position] if position < len(spans) else None)
        return out, None

    def _parse_label(self, completion: Completion, ref: int) -> tuple[dict[int, Answer], str | None]:
        """A bare-label answer: exactly one of the labels, its confidence from the label's tokens."""
        text = completion.text
        label = text.strip()
        if label not in self.taxonomy.label_names:
            return {}, f"answer {text[:80]!r} is not a label"
        confidence = None
        if completion.logprobs:
            confidence = label_confidence(
                text,
                text.index(label),
                label,
                self.taxonomy.label_names,
                completion.logprobs,
                json_string=False,
            )
        method = "label_logprobs" if confidence is not None else "none"
        return {ref: Answer(label, None, confidence, method)}, None

    def _answer(self, item: BaseModel, completion: Completion, span: list[int] | None) -> Answer:
        data: dict[str, Any] = item.model_dump()
        label = data.get("label")
        labels = data.get("labels")
        chosen = [label] if label is not None else list(labels or [])
        if self.use_logprobs and completion.logprobs and span is not None:
            scores = [
                self._logprob_confidence(completion.text, start, value, completion.logprobs)
                for start, value in zip(span, chosen, strict=False)
            ]
            known = [s for s in scores if s is not None]
            if known and len(known) == len(chosen):
                return Answer(label, labels, min(known), "label_logprobs")
            if not chosen:  # multi-label answer with no label: nothing to be unsure of
                return Answer(label, labels, 1.0, "label_logprobs")
        return Answer(label, labels, stated_confidence(data.get("confidence")), "stated")

    def _logprob_confidence(
        self, text: str, start: int, chosen: str, tokens: list[TokenLogprob]
    ) -> float | None:
        return label_confidence(text, start, chosen, self.taxonomy.label_names, tokens)

    def _label_spans(self, text: str) -> list[list[int]]:
        """Per results item, the offsets where each of its label strings starts in text."""
        spans: list[list[int]] = []
        if self.taxonomy.multi_label:
            for match in re.finditer(r'"labels"\s*:\s*\[([^\]]*)\]', text):
                inner = match.start(1)
                spans.append([inner + m.start() + 1 for m in re.finditer(r'"', match.group(1))][::2])
        else:
            spans = [[m.end()] for m in re.finditer(r'"label"\s*:\s*"', text)]
        return spans

    def _calibrated(self, raw: float | None) -> float | None:
        if raw is None:
            return None
        return float(self.calibrate(raw)) if self.calibrate else raw

    def _outcome(self, confidence: float | None) -> Outcome:
        if confidence is not None and confidence >= self.model.tier.threshold:
            return Outcome.accepted
        return unsure(self.is_last)

    def failed_attempt(self, packed: Packed, exc: Exception, request_id: str) -> AttemptRecord:
        """The attempt of a document whose whole answer was unusable (a truncated body, a batch line)."""
        tier = self.model.tier
        return AttemptRecord(
            doc_id=packed.doc.id,
            tier=tier.name,
            model=tier.model,
            request_id=request_id,
            usage=Usage(),
            cost_nanousd=0,
            reference_nanousd=0,
            latency_ms=0,
            error=f"{type(exc).__name__}: {str(exc)[:300]}",
        )

    def _decide(self, doc_id: int, answer: Answer | None, attempts: list[AttemptRecord]) -> Decision:
        if answer is None:
            return Decision(doc_id=doc_id, outcome=unsure(self.is_last), attempts=attempts)
        return Decision(
            doc_id=doc_id,
            outcome=attempts[-1].outcome,
            label=answer.label,
            labels=answer.labels,
            confidence=attempts[-1].confidence,
            attempts=attempts,
        )
