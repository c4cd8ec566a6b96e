"""Confidence from token logprobs, and calibration."""

import math

from classifiers.calibration import choose_threshold, fit, sweep
from classifiers.confidence import TokenLogprob, label_confidence, stated_confidence

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def toks(*items: tuple[str, float, list[tuple[str, float]]]) -> list[TokenLogprob]:
    return [TokenLogprob(t, lp, top) for t, lp, top in items]


def test_mass_on_the_chosen_label_among_labels() -> None:
    content = '{"label": "Sports"}'
    tokens = toks(
        ('{"label": "', 0.0, []),
        (
            "Sports",
            math.log(0.6),
            [("Sports", math.log(0.6)), ("World", math.log(0.2)), ("xyz", math.log(0.2))],
        ),
        ('"}', 0.0, []),
    )
    start = content.index("Sports")
    # xyz is no label: 0.6 / (0.6 + 0.2)
    conf = label_confidence(content, start, "Sports", LABELS, tokens)
    assert conf is not None and abs(conf - 0.75) < 1e-9


def test_shared_prefix_walks_to_the_deciding_token() -> None:
    content = '{"label": "Sci/Tech"}'
    tokens = toks(
        ('{"label": "', 0.0, []),
        ("S", math.log(0.9), [("S", math.log(0.9)), ("World", math.log(0.1))]),
        ("ci", math.log(0.5), [("ci", math.log(0.5)), ("ports", math.log(0.5))]),
        ("/Tech", 0.0, []),
        ('"}', 0.0, []),
    )
    conf = label_confidence(content, content.index("Sci"), "Sci/Tech", LABELS, tokens)
    assert conf is not None and abs(conf - 0.45) < 1e-9  # 0.9 (S vs World) * 0.5 (ci vs ports)


def test_misaligned_tokens_give_none() -> None:
    assert label_confidence('{"label": "World"}', 11, "World", LABELS, toks(("x", 0.0, []))) is None


def test_stated_confidence_is_clamped() -> None:
    assert stated_confidence(38461538461538) == 1.0
    assert stated_confidence(85) == 0.85
    assert stated_confidence(-1) == 0.0
    assert stated_confidence("high") is None


def test_isotonic_calibration_is_monotone_and_threshold_is_cheapest_within_gap() -> None:
    raw = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.95]
    correct = [False, False, True, False, True, True, True, True]
    cal = fit(raw, correct, "isotonic")
    values = [cal(x) for x in raw]
    assert values == sorted(values)
    platt = fit(raw, correct, "platt")
    assert platt(0.9) > platt(0.1)
    points = sweep(raw, correct, [True] * 8, [1.0] * 8, [10.0] * 8)
    best = choose_threshold(points, large_accuracy=1.0, target_gap=0.0)
    assert best.accuracy == 1.0
    # escalating only the wrong-or-below ones: below 0.7 covers indexes 0..3
    assert best.cost == 8 + 40
