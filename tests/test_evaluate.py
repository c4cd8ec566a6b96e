"""How `docsort eval` scores systems: the cascade and the oracle built from each document's answers."""

from __future__ import annotations

import pytest

from classifiers.evaluate import Labelled, TierResult, report


def result(tier: str, answers: list[str], confidence: list[float], cost: list[int]) -> TierResult:
    return TierResult(
        tier=tier,
        predicted=[(a,) for a in answers],
        confidence=confidence,
        cost_nanousd=cost,
        input_tokens=[10] * len(answers),
        output_tokens=[2] * len(answers),
    )


def test_cascade_and_oracle_follow_each_documents_answers() -> None:
    rows = [Labelled(str(i), f"text {i}", (gold,)) for i, gold in enumerate("ABCD")]
    # small is right on 0 (sure) and 1 (unsure), wrong on 2 (sure) and 3 (unsure)
    small = result("small", ["A", "B", "X", "X"], [0.9, 0.2, 0.95, 0.1], [1, 2, 4, 8])
    # large is right on 0, 1, 2, wrong on 3
    large = result("large", ["A", "B", "C", "X"], [0.9, 0.9, 0.9, 0.9], [100, 200, 400, 800])
    out = report(rows, [small, large], [0.5, 0.5], ["A", "B", "C", "D", "X"])
    systems = out["systems"]
    assert systems["small"]["accuracy"] == pytest.approx(0.5)
    assert systems["large"]["accuracy"] == pytest.approx(0.75)
    # cascade: 0 and 2 stay with small (sure: right, wrong), 1 and 3 go on (right, wrong)
    assert systems["cascade"]["accuracy"] == pytest.approx(0.5)
    assert systems["cascade"]["escalation_rate"] == pytest.approx(0.5)
    assert systems["cascade"]["cost_usd"] == pytest.approx((1 + 2 + 4 + 8 + 200 + 800) / 1e9)
    # oracle: exactly small's errors (2 and 3) go on; large fixes 2
    assert systems["oracle"]["accuracy"] == pytest.approx(0.75)
    assert systems["oracle"]["escalation_rate"] == pytest.approx(0.5)
    assert systems["oracle"]["cost_usd"] == pytest.approx((1 + 2 + 4 + 8 + 400 + 800) / 1e9)
    # Each tier's part in the cascade: small answered 0 and 2 (one right), large 1 and 3 (one right).
    assert out["cascade_tiers"] == {
        "small": {"answered": 2, "share": 0.5, "accuracy": 0.5},
        "large": {"answered": 2, "share": 0.5, "accuracy": 0.5},
    }
    # small's confidence ranks its right answers: 0.9 > 0.1 but 0.95 (wrong) > 0.2 (right)
    assert out["auroc"]["small"] == pytest.approx(0.5)
