"""The cascade's tiers: what a tier is, what it costs, and the hosted, offline and local defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class Price(BaseModel):
    """USD per million tokens, as providers publish them."""

    model_config = ConfigDict(extra="forbid")

    input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0
    batch_discount: float = Field(0.5, ge=0, le=1, description="Share of price paid via Batch API")


# Current OpenAI list prices (USD / 1M tokens); the demo prices the offline models like these.
GPT_4O_MINI = Price(input=0.15, cached_input=0.075, output=0.60)
GPT_4O = Price(input=2.50, cached_input=1.25, output=10.00)


class ModelTier(BaseModel):
    """One tier of the cascade: an endpoint, how to ask it, what it costs, when to trust it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,30}$")
    # A runner kind registered in classifiers/runners.py (openai, llamacpp, local); checked at start.
    kind: str = Field("openai", pattern=r"^[a-z][a-z0-9_]{0,30}$")
    base_url: str = "https://api.openai.com/v1"
    api_key: SecretStr = SecretStr("not-needed")
    model: str = "gpt-4o-mini"
    # label_only: one document a request, the bare label as the answer (grammar-bound on llama.cpp);
    # the most reliable confidence for tiny local models.
    transport: Literal["tools", "json_schema", "json_object", "label_only"] = "json_schema"
    confidence: Literal["label_logprobs", "stated"] = "label_logprobs"
    price: Price = Field(default_factory=Price)
    threshold: float = Field(0.5, ge=0, le=1)
    target_accuracy: float | None = Field(
        None, gt=0, le=1, description="What its accepted answers promise; default local.target_accuracy"
    )
    batch_size: int = Field(8, ge=1, le=64)
    # The OpenAI Batch API (half price, answers within 24 hours): off, for imports that ask for it, or for
    # every document (worker/batches.py).
    batch_api: Literal["off", "imports", "always"] = "off"
    batch_max_requests: int = Field(50_000, ge=1, le=50_000, description="Requests per batch file")
    batch_max_bytes: int = Field(200_000_000, ge=1_000, le=200_000_000, description="Bytes per batch file")
    batch_enqueued_tokens: int | None = Field(
        None, ge=1, description="Input tokens in submitted, unfinished batches at most (the account's tier)"
    )
    batch_flush_s: float = Field(60.0, ge=0, description="A waiting document is submitted after this at most")
    batch_line_retries: int = Field(1, ge=0, description="Resubmissions of a failed or expired line alone")
    batch_escalation: Literal["batch", "sync"] = Field(
        "batch", description="Escalations of batched documents: as a batch at the next tier, or at once"
    )
    request_token_budget: int = Field(8000, ge=256, description="Input tokens per request")
    doc_token_budget: int = Field(600, ge=16, description="Tokens kept per document (head+tail)")
    max_output_tokens: int = Field(1024, ge=16)
    top_logprobs: int = Field(10, ge=0, le=20)
    max_reasks: int = Field(2, ge=0, le=5)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0, description="Tries after a transient error (by the task, backing off)")
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokenizer: str = Field("tiktoken:o200k_base", description="tiktoken:<enc> | gguf | approx")
    weights: str | None = Field(None, description="Offline weights key; docsort serves it itself")
    port: int | None = Field(None, description="Port of the llama.cpp server docsort starts")

    @model_validator(mode="after")
    def _local_is_free(self) -> ModelTier:
        if self.kind == "local" and self.price != Price():
            raise ValueError(f"tier {self.name}: a local tier costs nothing; leave its price unset")
        if self.kind == "local" and "threshold" not in self.model_fields_set:
            self.threshold = 0.0  # a local tier's threshold is a floor; its model brings a calibrated one
        return self


def openai_tiers(api_key: str) -> list[ModelTier]:
    """The hosted default: gpt-4o-mini first, gpt-4o where it is unsure."""
    key = SecretStr(api_key)
    return [
        ModelTier(name="small", model="gpt-4o-mini", api_key=key, price=GPT_4O_MINI, threshold=0.8),
        ModelTier(name="large", model="gpt-4o", api_key=key, price=GPT_4O, threshold=0.6),
    ]


class OfflineSettings(BaseModel):
    """Where the offline model servers are: on this machine (`docsort up`), or a service of their own."""

    host: str = Field("127.0.0.1", description="Where the workers reach them (compose: the llm service)")
    bind: str = Field("127.0.0.1", description="Where they listen (0.0.0.0 in their own container)")
    small_port: int = 8081
    large_port: int = 8082


def offline_tiers(offline: OfflineSettings | None = None) -> list[ModelTier]:
    """The offline default: local llama.cpp servers, priced as gpt-4o-mini and gpt-4o."""
    offline = offline or OfflineSettings()
    common: dict[str, Any] = {
        "kind": "llamacpp",
        "transport": "json_object",
        "confidence": "label_logprobs",
        "tokenizer": "gguf",
        "batch_size": 4,
        "request_token_budget": 3000,
        "doc_token_budget": 256,
        "max_output_tokens": 256,
        "timeout_s": 300.0,
    }
    pair = [
        ("small", "smollm2-135m", offline.small_port, GPT_4O_MINI, 0.6),
        ("large", "qwen2.5-coder-0.5b", offline.large_port, GPT_4O, 0.5),
    ]
    return [
        ModelTier(
            name=name,
            model=model,
            weights=model,
            port=port,
            base_url=f"http://{offline.host}:{port}/v1",
            price=price,
            threshold=threshold,
            **common,
        )
        for name, model, port, price, threshold in pair
    ]


def local_tier(name: str = "local") -> ModelTier:
    """The learning tier: put it first in `models`; its threshold is calibrated per trained model."""
    return ModelTier(name=name, kind="local", model="local", base_url="", batch_size=64, threshold=0.0)
