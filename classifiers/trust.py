"""Measured trust: a tier's agreement with its auditor, the interval around it, and what a target implies.

Agreement with an audit is not accuracy when the auditor is a model: a tier right with probability q
agrees with an auditor right with probability p on  q·p + (1 - q)·(1 - p)/(K - 1)  of documents, if the
two err independently and errors spread evenly over the K - 1 wrong labels. `implied_agreement` is that
figure for a tier at its target; the drift guard compares the audited agreement's interval with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z90 = 1.645  # two-sided 90%: the intervals /v1/quality shows


def wilson(hits: int, n: int, z: float = Z90) -> tuple[float, float]:
    """The Wilson score interval for hits out of n (0, 1 when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n)), min(1.0, (centre + spread) / (1 + z * z / n))


def implied_agreement(target: float, auditor_accuracy: float, labels: int) -> float:
    """The agreement a tier right at `target` has with an auditor right at `auditor_accuracy`."""
    wrong_alike = (1 - target) * (1 - auditor_accuracy) / max(labels - 1, 1)
    return target * auditor_accuracy + wrong_alike


@dataclass(frozen=True)
class Agreement:
    """How often a tier's answers matched their audits, with the 90% interval."""

    audits: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.audits if self.audits else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.agreed, self.audits)

    def confidently_below(self, level: float, min_support: int) -> bool:
        """Whether, on at least min_support audits, even the interval's upper end is under level."""
        return self.audits >= min_support and self.interval[1] < level

    def confidently_at_least(self, level: float, min_support: int) -> bool:
        """Whether, on at least min_support audits, the interval's lower end reaches level."""
        return self.audits >= min_support and self.interval[0] >= level


def raised_threshold(
    confidence: Sequence[float], agreed: Sequence[bool], level: float, min_support: int
) -> float | None:
    """The lowest threshold whose audited answers at or above it agree at `level` (interval's lower end),
    over at least min_support audits; None where no threshold does (the tier's calibration cannot)."""
    pairs = sorted(zip(confidence, agreed, strict=True), key=lambda p: -p[0])
    best = None
    hits = 0
    for k, (conf, ok) in enumerate(pairs, start=1):
        hits += ok
        if k < len(pairs) and pairs[k][0] == conf:
            continue  # a threshold cannot split equal confidences
        if k >= min_support and wilson(hits, k)[0] >= level:
            best = conf
    return best


def sampled(seed: str, doc_id: int, rate: float) -> bool:
    """Whether a document is in the audit sample: a seeded hash of its id, so the choice is reproducible."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate
