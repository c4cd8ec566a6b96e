"""Prices and exact cost sharing: costs are integer nano-USD, so shares add up to the request."""

from __future__ import annotations

from pydantic import BaseModel

from core.tiers import Price

NANO_PER_USD = 1_000_000_000


class Usage(BaseModel):
    """Tokens one request used, as the endpoint reported them."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


def cost_nanousd(usage: Usage, price: Price, *, batch_api: bool = False) -> int:
    """What usage costs at price, in nano-USD (prices are USD per million tokens)."""
    uncached = max(usage.input_tokens - usage.cached_tokens, 0)
    micro = (
        uncached * price.input + usage.cached_tokens * price.cached_input + usage.output_tokens * price.output
    )
    if batch_api:
        micro *= price.batch_discount
    return round(micro * 1000)  # USD/1M tokens * tokens = micro-USD; * 1000 = nano-USD


def split(total: int, weights: list[int]) -> list[int]:
    """total shared in proportion to weights, by largest remainder, summing exactly to total."""
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in remainders[: total - sum(shares)]:
        shares[i] += 1
    return shares


def split_usage(usage: Usage, weights: list[int]) -> list[Usage]:
    """A request's usage shared among its documents in proportion to weights."""
    inputs = split(usage.input_tokens, weights)
    cached = split(usage.cached_tokens, weights)
    outputs = split(usage.output_tokens, weights)
    return [
        Usage(input_tokens=i, cached_tokens=c, output_tokens=o)
        for i, c, o in zip(inputs, cached, outputs, strict=True)
    ]
