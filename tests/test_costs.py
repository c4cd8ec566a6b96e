"""Cost arithmetic: prices, and shares that add up exactly."""

from hypothesis import given
from hypothesis import strategies as st

from classifiers.costs import Usage, cost_nanousd, split, split_usage
from core.tiers import GPT_4O, GPT_4O_MINI


def test_cost_matches_the_price_table() -> None:
    usage = Usage(input_tokens=1_000_000, cached_tokens=200_000, output_tokens=10_000)
    # 800k uncached at 0.15, 200k cached at 0.075, 10k output at 0.60 (USD per 1M)
    assert cost_nanousd(usage, GPT_4O_MINI) == round((0.8 * 0.15 + 0.2 * 0.075 + 0.01 * 0.60) * 1e9)
    assert cost_nanousd(Usage(input_tokens=100, output_tokens=10), GPT_4O) == 100 * 2500 + 10 * 10000


def test_batch_discount_halves_the_price() -> None:
    usage = Usage(input_tokens=1000, output_tokens=100)
    assert cost_nanousd(usage, GPT_4O, batch_api=True) * 2 == cost_nanousd(usage, GPT_4O)


@given(st.integers(0, 10**12), st.lists(st.integers(0, 10**6), min_size=1, max_size=64))
def test_split_sums_exactly(total: int, weights: list[int]) -> None:
    shares = split(total, weights)
    assert sum(shares) == total
    assert all(s >= 0 for s in shares)


def test_split_is_proportional() -> None:
    assert split(100, [1, 1, 2]) == [25, 25, 50]
    assert split(10, [1, 1, 1]) == [4, 3, 3]


def test_split_usage_keeps_every_token() -> None:
    usage = Usage(input_tokens=1001, cached_tokens=17, output_tokens=99)
    parts = split_usage(usage, [10, 30, 61])
    total = Usage()
    for part in parts:
        total = total + part
    assert total == usage
