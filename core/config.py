"""One typed settings object, built in entry points and passed in; never a module global."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_serializer, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.secrets import is_placeholder, mask_url, secret_values
from core.taxonomy_spec import TaxonomySpec, default_taxonomy
from core.tiers import ModelTier, OfflineSettings, local_tier, offline_tiers, openai_tiers


class ApiSettings(BaseModel):
    """The HTTP API and its input limits."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_document_bytes: int = 1_000_000
    max_request_bytes: int = 20_000_000
    max_documents_per_request: int = 5_000
    max_files_per_upload: int = 100
    require_auth: bool = False
    # Signs the console's session cookies. Unset: a random one per API process (sessions end when it
    # restarts, and do not carry across several API processes: set it when you run more than one).
    session_secret: SecretStr | None = None
    session_hours: float = Field(12.0, gt=0, description="A console session ends this long after login")


class FlowerSettings(BaseModel):
    """Flower, the Celery monitor; always behind basic auth."""

    host: str = "127.0.0.1"
    port: int = 5555
    user: str = "docsort"
    password: SecretStr = SecretStr("docsort")


class WorkerSettings(BaseModel):
    """Celery workers: batching, concurrency, and how soon the reconciler recovers from a crash.

    A task renews its documents' claim before every model request, so a claim older than the tier's
    timeout_s + lease_grace_s belongs to a dead task: the reconciler, every reconcile_every_s, hands
    those documents out again. Recovery after a crash therefore takes at most
    max(timeout_s) + lease_grace_s + reconcile_every_s (plus one batch's work).
    """

    concurrency: int = 2
    flush_interval_s: float = Field(0.5, ge=0)
    lease_grace_s: float = Field(30.0, gt=0, description="Added to a tier's timeout_s: a claim's lease")
    requeue_after_s: float = Field(60.0, gt=0, description="Waiting at an idle tier this long: re-sent")
    reconcile_every_s: float = Field(30.0, gt=0)
    max_batches_per_dispatch: int = 200
    requests_per_task: int = Field(
        4,
        ge=1,
        le=16,
        description="Documents per classify task, in requests of the tier's batch_size: a task's claim, "
        "record and hand-over are paid once for them (docs/benchmarks.md); its requests go one by one",
    )
    synchronous_commit: bool = Field(
        True,
        description="PostgreSQL only. False: the worker's commits return before their WAL is on disk (the "
        "API's never do, so no accepted document is at risk). If the database server crashes, the last "
        "~0.6 s of the worker's writes are lost: those documents are classified again, their answers "
        "possibly bought twice; S3 import pages stored then are lost too (their being read again is not "
        "tested). Measured without a local tier: +24% classified/s in session 10, +8% since a task's answers "
        "share its commits (docs/benchmarks.md)",
    )


class S3Settings(BaseModel):
    """Bulk import from S3-compatible storage; credentials come from boto3's standard chain."""

    endpoint_url: str | None = Field(None, description="MinIO, SeaweedFS, R2...; None means AWS")
    # An import request may name its own endpoint; the workers then connect wherever it points (with
    # the server's credentials), so outside development only listed endpoints are taken.
    allowed_endpoints: list[str] | None = Field(
        None,
        description="Endpoints an import request may name besides endpoint_url; "
        "None: any in development, none in production",
    )
    region: str | None = None
    max_object_bytes: int = Field(20_000_000, ge=1, description="Larger objects are skipped unread")
    fetch_concurrency: int = Field(16, ge=1, le=256, description="Objects fetched at once per import")
    page_size: int = Field(1000, ge=1, le=1000, description="Keys per list_objects_v2 page")
    task_time_budget_s: float = Field(300.0, gt=0, description="An import task re-queues itself after")
    stale_after_s: float = Field(600.0, gt=0, description="A silent import is resumed after this")


class SpendSettings(BaseModel):
    """Spending caps per UTC day; when reached, escalations wait instead of spending past it."""

    daily_cap_usd: float | None = Field(None, ge=0, description="All taxonomies together")
    per_taxonomy_daily_cap_usd: dict[str, float] = Field(default_factory=dict)

    def cap_for(self, taxonomy: str) -> float | None:
        """The tighter of the global and the taxonomy's cap."""
        caps = [
            c for c in (self.daily_cap_usd, self.per_taxonomy_daily_cap_usd.get(taxonomy)) if c is not None
        ]
        return min(caps) if caps else None


class LocalSettings(BaseModel):
    """The local tier: what it learns from, when it retrains, how sure it must be (classifiers/local.py)."""

    features: Literal["auto", "tfidf", "embeddings", "tfidf+embeddings"] = Field(
        "auto", description="auto: the best by cross-validation among those installed"
    )
    min_examples: int = Field(50, ge=2, description="Labels needed before the first model")
    retrain_every: int = Field(100, ge=1, description="New labels that make a retrain due")
    holdout_fraction: float = Field(0.2, ge=0, lt=1, description="Labels never trained on, for scoring")
    target_accuracy: float = Field(
        0.9, gt=0, le=1, description="Held-out accuracy its answers must reach; set to the large tier's"
    )
    min_support: int = Field(20, ge=1, description="Held-out answers a threshold must rest on")
    confidence_z: float = Field(
        1.28, gt=0, description="Answers above the threshold reach target_accuracy at this one-sided bound"
    )
    harvest: Literal["trusted", "accepted", "last_tier", "none"] = Field(
        "trusted",
        description="LLM answers learned from: the last tier's, and a lower tier's while its audits show "
        "it meets its target (trusted); any accepted; only the last tier's; none",
    )
    max_examples: int = Field(20_000, ge=10, description="Train on at most the newest N labels")
    embed_backend: Literal["onnx-q8", "onnx", "torch", "static"] = Field(
        "onnx-q8",
        description="onnx-q8: MiniLM with int8 matrix products, ~2x onnx's speed (float32 products); "
        "static: ~70x faster, a few points less accurate (docs/benchmarks.md)",
    )
    embed_max_tokens: int = Field(128, ge=16, le=512)
    gate: bool = Field(
        True,
        description="An embedding model answers with its TF-IDF candidate first where, on the scored "
        "labels, that nearly always gave its answer and erred no more (classifiers/gate.py): those texts "
        "are never embedded",
    )
    embed_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="onnxruntime threads per worker process; 0: the CPUs over worker.concurrency",
    )

    def threads_per_process(self, concurrency: int) -> int:
        """Embedding threads for one of concurrency worker processes: its share of the CPUs, at least 1."""
        return self.embed_threads or max(1, (os.cpu_count() or 1) // max(1, concurrency))


class AuditSettings(BaseModel):
    """Audit sampling: a share of the answers lower tiers accepted, checked again to measure them."""

    rate: float = Field(0.02, ge=0, le=1, description="Share of accepted answers audited (by document id)")
    to: Literal["last_tier", "review"] = Field(
        "last_tier", description="Who audits: the last tier or a person"
    )
    min_support: int = Field(30, ge=5, description="Audits the drift guard needs before it acts")
    seed: str = Field("docsort", description="Seeds the choice of audited documents (reproducible)")
    gather_s: float = Field(
        2.0,
        ge=0,
        description="Audits go to the last tier in its full batches; a part batch waits this long for more",
    )


class Settings(BaseSettings):
    """Everything docsort reads from the environment (DOCSORT_*) or docsort.toml."""

    model_config = SettingsConfigDict(
        env_prefix="DOCSORT_",
        env_nested_delimiter="__",
        toml_file="docsort.toml",
        extra="forbid",
        hide_input_in_errors=True,  # a start-up error must not print the secrets it was given
        env_ignore_empty=True,  # compose passes `${VAR:-}` as "": that means unset, not an empty value
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path(".docsort")
    weights_dir: Path | None = Field(None, description="Assembled GGUF files; default data_dir/models")
    database_url: str | None = None
    redis_url: str | None = None
    models: list[ModelTier] = Field(default_factory=list)
    prompt_tag_key: SecretStr | None = Field(
        None,
        description="Key of the tag that fences documents in a prompt: set, the same documents make the "
        "same prompt in every worker and path (reproducible answers at temperature 0); unset, random",
    )
    offline: OfflineSettings = Field(default_factory=OfflineSettings)
    default_taxonomy: TaxonomySpec = Field(default_factory=default_taxonomy)
    api: ApiSettings = Field(default_factory=ApiSettings)
    flower: FlowerSettings = Field(default_factory=FlowerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
    spend: SpendSettings = Field(default_factory=SpendSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
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
            # The learned tier leads: zero-shot it hands everything on; with labels it answers the
            # easy documents for free (classifiers/local.py).
            self.models = [local_tier(), *(openai_tiers(key) if key else offline_tiers(self.offline))]
        names = [tier.name for tier in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model tier names must be unique, got {names}")
        if self.env == "production":
            placeholders = [path for path, value in secret_values(self).items() if is_placeholder(value)]
            placeholders += [
                f"models[{index}].api_key"
                for index, tier in enumerate(self.models)
                if (urlsplit(tier.base_url).hostname or "").endswith("openai.com")
                and tier.api_key.get_secret_value() == "not-needed"
            ]
            if placeholders:
                raise ValueError(
                    f"placeholder secrets outside development: {', '.join(placeholders)}; "
                    "set real ones (e.g. DOCSORT_FLOWER__PASSWORD)"
                )
            if not self.api.require_auth:
                raise ValueError("api.require_auth must be true in production")
        return self

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if isinstance(value, str) and (name or "").endswith("_url") else value

    @field_serializer("database_url", "redis_url", when_used="json")
    def _masked(self, value: str | None) -> str | None:
        """In JSON dumps, like SecretStr fields, URLs show no password."""
        return mask_url(value) if value else value

    def weights_path(self, key: str) -> Path:
        """Where the assembled GGUF for an offline weights key lives."""
        assert self.weights_dir is not None
        return self.weights_dir / f"{key}.gguf"

    @property
    def db_url(self) -> str:
        assert self.database_url is not None
        return self.database_url

    @property
    def llm_tiers(self) -> list[ModelTier]:
        """The tiers that call a model (every one but the learned local tier), in cascade order."""
        return [tier for tier in self.models if tier.kind != "local"]

    @property
    def recovery_bound_s(self) -> float:
        """How long documents of a crashed task wait at most before the reconciler hands them out again."""
        longest = max((tier.timeout_s for tier in self.models), default=0.0)
        return longest + self.worker.lease_grace_s + self.worker.reconcile_every_s

    @property
    def learns(self) -> bool:
        """Whether the cascade has a local tier, and so whether labels are worth keeping."""
        return any(tier.kind == "local" for tier in self.models)

    def target_for(self, name: str) -> float:
        """The accuracy a tier's accepted answers promise (the local tier's: local.target_accuracy)."""
        tier = self.tier(name)
        if tier.kind == "local" or tier.target_accuracy is None:
            return self.local.target_accuracy
        return tier.target_accuracy

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
