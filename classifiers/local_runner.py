"""The local tier in the cascade: a trained model's answers as decisions, and what they saved."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from classifiers.costs import Usage, cost_nanousd
from classifiers.decision import AttemptRecord, Decision, Ledger, unsure
from classifiers.local import LocalClassifier
from classifiers.packing import DocIn, system_prompt
from classifiers.taxonomy import Taxonomy
from classifiers.tokens import Tokenizer, truncate
from core.tiers import ModelTier
from core.vocab import Outcome

log = logging.getLogger("docsort.local")
FRAMING_TOKENS = 24  # a document's fence lines and its share of the request's wording
ANSWER_TOKENS = 16  # {"ref": n, "label": "..."} for one document


def reference_cost(taxonomy: Taxonomy, tier: ModelTier, tokenizer: Tokenizer) -> Callable[[str], int]:
    """What sending a text to tier would cost (nano-USD): its tokens, its share of the prompt, an answer."""
    shared = len(tokenizer.encode(system_prompt(taxonomy))) // tier.batch_size + FRAMING_TOKENS

    def cost(text: str) -> int:
        _, count = truncate(text, tokenizer, tier.doc_token_budget)
        usage = Usage(input_tokens=count + shared, output_tokens=ANSWER_TOKENS)
        return cost_nanousd(usage, tier.price)

    return cost


@dataclass
class LocalRunner:
    """The local tier's pass: answer where the model is sure enough, else hand on; never costs."""

    taxonomy: Taxonomy
    tier: ModelTier
    model: LocalClassifier | None = None
    model_name: str = "local"
    is_last: bool = False
    reference: Callable[[str], int] | None = None

    def run(self, docs: list[DocIn], ledger: Ledger | None = None, alone: bool = False) -> list[Decision]:
        """One decision per document; untrained, every document goes on unrecorded (no requests: no books)."""
        pass_on = unsure(self.is_last)
        if self.model is None:
            # No attempt is recorded: an answerless zero-cost row would only skew the cost baseline.
            return [
                Decision(doc_id=d.id, outcome=pass_on, reason="local tier: no trained model yet")
                for d in docs
            ]
        started = time.monotonic()
        try:
            predictions = self.model.predict([d.text for d in docs])
        except Exception as exc:  # the free tier must never hold the cascade up: hand everything on
            log.exception("local model failed; passing the batch on")
            return [Decision(doc_id=d.id, outcome=pass_on, reason=f"local tier: {exc}"[:300]) for d in docs]
        latency_ms = int((time.monotonic() - started) * 1000)
        request_id = f"local-{uuid.uuid4().hex[:16]}"
        threshold = max(self.model.threshold, self.tier.threshold)  # the tier may be stricter, never looser
        known = set(self.taxonomy.label_names)
        multi = self.taxonomy.multi_label
        decisions = []
        for doc, p in zip(docs, predictions, strict=True):
            # A model of the other cardinality (the taxonomy changed kind) is never sure.
            names = list(p.labels) if p.labels is not None else [str(p.label)]
            fits = (p.labels is not None) == multi and set(names) <= known
            sure = p.confidence >= threshold and fits
            label, labels = (None, names) if multi else (p.label, None)
            attempt = AttemptRecord(
                doc_id=doc.id,
                tier=self.tier.name,
                model=self.model_name,
                request_id=request_id,
                usage=Usage(),
                cost_nanousd=0,
                reference_nanousd=self.reference(doc.text) if self.reference else 0,
                latency_ms=latency_ms,
                outcome=Outcome.accepted if sure else pass_on,
                label=label,
                labels=labels,
                confidence=p.confidence,
                raw_confidence=p.raw,
                # The gate's answers are told apart: what the operator sees the embeddings saved.
                confidence_method="local_gate_proba" if p.gated else "local_proba",
            )
            decisions.append(
                Decision(
                    doc.id,
                    attempt.outcome,
                    label=label,
                    labels=labels,
                    confidence=p.confidence,
                    attempts=[attempt],
                )
            )
        return decisions
