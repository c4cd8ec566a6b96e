"""One typed settings object, built in entry points and passed in; never a module global."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "docsort", "admin", "password", "secret"}


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
    kind: Literal["openai", "llamacpp"] = "openai"
    base_url: str = "https://api.openai.com/v1"
    api_key: SecretStr = SecretStr("not-needed")
    model: str = "gpt-4o-mini"
    transport: Literal["tools", "json_schema", "json_object"] = "json_schema"
    confidence: Literal["label_logprobs", "stated"] = "label_logprobs"
    price: Price = Field(default_factory=Price)
    threshold: float = Field(0.5, ge=0, le=1)
    batch_size: int = Field(8, ge=1, le=64)
    request_token_budget: int = Field(8000, ge=256, description="Input tokens per request")
    doc_token_budget: int = Field(600, ge=16, description="Tokens kept per document (head+tail)")
    max_output_tokens: int = Field(1024, ge=16)
    top_logprobs: int = Field(10, ge=0, le=20)
    max_reasks: int = Field(2, ge=0, le=5)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokenizer: str = Field("tiktoken:o200k_base", description="tiktoken:<enc> | gguf | approx")
    weights: str | None = Field(None, description="Offline weights key; docsort serves it itself")
    port: int | None = Field(None, description="Port of the llama.cpp server docsort starts")

    @property
    def queue(self) -> str:
        return f"tier.{self.name}"


def openai_tiers(api_key: str) -> list[ModelTier]:
    """The hosted default: gpt-4o-mini first, gpt-4o where it is unsure."""
    key = SecretStr(api_key)
    return [
        ModelTier(name="small", model="gpt-4o-mini", api_key=key, price=GPT_4O_MINI, threshold=0.8),
        ModelTier(name="large", model="gpt-4o", api_key=key, price=GPT_4O, threshold=0.6),
    ]


def offline_tiers() -> list[ModelTier]:
    """The offline default: local llama.cpp servers, priced as gpt-4o-mini and gpt-4o."""
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
    return [
        ModelTier(
            name="small",
            model="smollm2-135m",
            weights="smollm2-135m",
            port=8081,
            base_url="http://127.0.0.1:8081/v1",
            price=GPT_4O_MINI,
            threshold=0.6,
            **common,
        ),
        ModelTier(
            name="large",
            model="qwen2.5-coder-0.5b",
            weights="qwen2.5-coder-0.5b",
            port=8082,
            base_url="http://127.0.0.1:8082/v1",
            price=GPT_4O,
            threshold=0.5,
            **common,
        ),
    ]


class ApiSettings(BaseModel):
    """The HTTP API and its input limits."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_document_bytes: int = 1_000_000
    max_request_bytes: int = 20_000_000
    max_documents_per_request: int = 5_000
    max_files_per_upload: int = 100
    require_auth: bool = False


class FlowerSettings(BaseModel):
    """Flower, the Celery monitor; always behind basic auth."""

    host: str = "127.0.0.1"
    port: int = 5555
    user: str = "docsort"
    password: SecretStr = SecretStr("docsort")


class WorkerSettings(BaseModel):
    """Celery workers: batching, reconciliation, concurrency."""

    concurrency: int = 2
    flush_interval_s: float = Field(0.5, ge=0)
    reconcile_after_s: float = Field(600.0, gt=0)
    reconcile_every_s: float = Field(60.0, gt=0)
    max_batches_per_dispatch: int = 200


class LabelSpec(BaseModel):
    """A label with what it means, as the model is told."""

    name: str
    description: str = ""
    examples: list[str] = Field(default_factory=list)


class TaxonomySpec(BaseModel):
    """A taxonomy as users write it (YAML, JSON, settings)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    labels: list[LabelSpec] = Field(min_length=2)
    multi_label: bool = False
    none_label: str | None = None

    @model_validator(mode="after")
    def _unique_labels(self) -> TaxonomySpec:
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names):
            raise ValueError("label names must be unique")
        if self.none_label is not None and self.none_label in names:
            raise ValueError("none_label must not repeat a label")
        return self


def default_taxonomy() -> TaxonomySpec:
    """The taxonomy of the bundled samples: four news topics."""
    return TaxonomySpec(
        name="news",
        description="Topic of a short news item.",
        labels=[
            LabelSpec(name="World", description="International affairs, politics, conflicts, diplomacy"),
            LabelSpec(name="Sports", description="Games, athletes, teams, tournaments"),
            LabelSpec(name="Business", description="Companies, markets, economy, finance"),
            LabelSpec(
                name="Sci/Tech",
                description="Science, technology, computing, space, health research",
            ),
        ],
    )


class Settings(BaseSettings):
    """Everything docsort reads from the environment (DOCSORT_*) or docsort.toml."""

    model_config = SettingsConfigDict(
        env_prefix="DOCSORT_",
        env_nested_delimiter="__",
        toml_file="docsort.toml",
        extra="forbid",
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path(".docsort")
    weights_dir: Path | None = Field(None, description="Assembled GGUF files; default data_dir/models")
    database_url: str | None = None
    redis_url: str | None = None
    models: list[ModelTier] = Field(default_factory=list)
    default_taxonomy: TaxonomySpec = Field(default_factory=default_taxonomy)
    api: ApiSettings = Field(default_factory=ApiSettings)
    flower: FlowerSettings = Field(default_factory=FlowerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    log_json: bool = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls),
            file_secret_settings,
        )

    @model_validator(mode="after")
    def _defaults_and_guards(self) -> Settings:
        if self.weights_dir is None:
            self.weights_dir = self.data_dir / "models"
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'docsort.db'}"
        if not self.models:
            key = os.environ.get("OPENAI_API_KEY", "")
            self.models = openai_tiers(key) if key else offline_tiers()
        names = [tier.name for tier in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model tier names must be unique, got {names}")
        if self.env == "production":
            if self.flower.password.get_secret_value().lower() in PLACEHOLDER_SECRETS:
                raise ValueError("flower.password is a placeholder; set DOCSORT_FLOWER__PASSWORD")
            if not self.api.require_auth:
                raise ValueError("api.require_auth must be true in production")
        return self

    def weights_path(self, key: str) -> Path:
        """Where the assembled GGUF for an offline weights key lives."""
        assert self.weights_dir is not None
        return self.weights_dir / f"{key}.gguf"

    @property
    def db_url(self) -> str:
        assert self.database_url is not None
        return self.database_url

    def tier(self, name: str) -> ModelTier:
        """The tier called name, or KeyError."""
        for tier in self.models:
            if tier.name == name:
                return tier
        raise KeyError(name)

    def next_tier(self, name: str) -> ModelTier | None:
        """The tier after name in the cascade, or None at the end."""
        names = [tier.name for tier in self.models]
        index = names.index(name)
        return self.models[index + 1] if index + 1 < len(self.models) else None
