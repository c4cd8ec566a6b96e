"""Confidence from token log-probabilities: the chosen label's share of the mass on all labels."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log-probability and the alternatives the endpoint listed."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


def label_confidence(
    content: str,
    start: int,
    chosen: str,
    labels: list[str],
    tokens: list[TokenLogprob],
    *,
    json_string: bool = True,
) -> float | None:
    """P(chosen | one of labels) where chosen's JSON text starts at content[start].

    Walks the generated tokens from the one covering `start`, and at each step multiplies the
    probability of continuing towards `chosen` over that of continuing towards any label still
    possible, until only `chosen` remains (the chain rule over the labels' token prefixes).
    None where the tokens do not line up with content (a tokenizer that re-spells the text).
    """
    # Inside JSON a label is escaped and ends at a quote; a bare answer is the label itself.
    rendered = {label: json.dumps(label)[1:-1] if json_string else label for label in labels}
    end = '"' if json_string else ""
    offsets = []
    position = 0
    for tok in tokens:
        offsets.append(position)
        position += len(tok.token)
    if position != len(content):
        return None
    index = next((i for i, off in enumerate(offsets) if off <= start < off + len(tokens[i].token)), None)
    if index is None:
        return None
    lead = content[offsets[index] : start]  # text of the first token before the label, e.g. '"'

    def fits(label: str, text: str) -> bool:
        full = lead + rendered[label] + end
        return full.startswith(text) or text.startswith(full)

    alive = set(labels)
    written = ""
    confidence = 1.0
    for tok in tokens[index:]:
        candidates = dict(tok.top)
        candidates.setdefault(tok.token, tok.logprob)
        mass_chosen = sum(math.exp(lp) for t, lp in candidates.items() if fits(chosen, written + t))
        mass_any = sum(
            math.exp(lp) for t, lp in candidates.items() if any(fits(label, written + t) for label in alive)
        )
        if mass_any <= 0:
            return None
        confidence *= mass_chosen / mass_any
        written += tok.token
        alive = {label for label in alive if fits(label, written)}
        if alive <= {chosen}:
            break
    return max(0.0, min(1.0, confidence))


def stated_confidence(value: object) -> float | None:
    """The model's own number, clamped to [0, 1]; grammars do not enforce numeric bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    number = float(value)
    if number > 1.0 and number <= 100.0:
        number /= 100.0  # a percentage
    return max(0.0, min(1.0, number))
