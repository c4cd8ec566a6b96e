"""One registry of runners by tier kind: the one way the worker, `docsort eval` and the benches get a tier.

    kind       runner                          asks
    openai     LLMRunner over OpenAIModel      OpenAI, Azure OpenAI, vLLM, Ollama (OpenAI-compatible)
    llamacpp   LLMRunner over LlamaCppModel    llama-cpp-python's server (json_object + schema, grammars)
    local      LocalRunner                     a trained classifier in the worker's process; free

A kind is a name in this registry; `check_kinds` refuses settings that name one it does not hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2  # the HTTP library of the openai client (a fork of httpx), the seam for injected faults

from classifiers.calibration import Calibrator
from classifiers.decision import Runner
from classifiers.llm_runner import LLMRunner
from classifiers.local import LocalClassifier
from classifiers.local_runner import LocalRunner, reference_cost
from classifiers.providers import ChatModel, LlamaCppModel, OpenAIModel
from classifiers.taxonomy import Taxonomy
from classifiers.tokens import Tokenizer, get_tokenizer
from core.config import Settings
from core.errors import ConfigError
from core.tiers import ModelTier


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a runner is built from."""

    tier: ModelTier
    taxonomy: Taxonomy
    is_last: bool
    reference: ModelTier | None = None  # the last tier: what the saving is measured against
    weights_dir: Path | None = None  # where GGUF files live (their tokenizers count tokens)
    http_client: httpx2.Client | None = None
    calibration: dict[str, Any] | None = None  # Calibrator params; a stored calibration's threshold
    threshold: float | None = None  # wins over the tier's when given
    local_model: LocalClassifier | None = None
    local_model_name: str = "local"
    wrap: Callable[[ChatModel], ChatModel] | None = None  # e.g. the workers' shared rate limits
    tag_key: bytes | None = None  # Settings.prompt_tag_key

    def tokenizer(self, tier: ModelTier) -> Tokenizer:
        """tier's tokenizer (a GGUF's own, read from weights_dir)."""
        path = str(self.weights_dir / f"{tier.weights}.gguf") if tier.weights and self.weights_dir else None
        return get_tokenizer(tier.tokenizer, path)


Factory = Callable[[RunnerSpec], Runner]
_KINDS: dict[str, Factory] = {}


def register_kind(kind: str) -> Callable[[Factory], Factory]:
    """Register the runner factory of a tier kind."""

    def wrap(factory: Factory) -> Factory:
        _KINDS[kind] = factory
        return factory

    return wrap


def kinds() -> list[str]:
    """Every registered tier kind."""
    return sorted(_KINDS)


def check_kinds(settings: Settings) -> None:
    """ConfigError unless every tier's kind is registered."""
    unknown = [f"{tier.name} ({tier.kind})" for tier in settings.models if tier.kind not in _KINDS]
    if unknown:
        raise ConfigError(f"unknown tier kind for {', '.join(unknown)}; known kinds: {kinds()}")


def build_runner(spec: RunnerSpec) -> Runner:
    """The runner for spec's tier kind."""
    try:
        factory = _KINDS[spec.tier.kind]
    except KeyError:
        raise ConfigError(f"no tier kind {spec.tier.kind!r}; known kinds: {kinds()}") from None
    return factory(spec)


def spec_for(settings: Settings, tier_name: str, taxonomy: Taxonomy, **extra: Any) -> RunnerSpec:
    """The spec of a tier of settings' cascade (extra: http_client, calibration, local_model...)."""
    tier = settings.tier(tier_name)
    return RunnerSpec(
        tier=tier,
        taxonomy=taxonomy,
        is_last=settings.next_tier(tier_name) is None,
        reference=settings.models[-1],
        weights_dir=settings.weights_dir,
        tag_key=settings.prompt_tag_key.get_secret_value().encode() if settings.prompt_tag_key else None,
        **extra,
    )


def _llm(adapter: Callable[[ModelTier, httpx2.Client | None], ChatModel]) -> Factory:
    def factory(spec: RunnerSpec) -> Runner:
        tier = spec.tier
        if spec.threshold is not None:
            tier = tier.model_copy(update={"threshold": spec.threshold})
        model = adapter(tier, spec.http_client)
        return LLMRunner(
            taxonomy=spec.taxonomy,
            model=spec.wrap(model) if spec.wrap else model,
            tokenizer=spec.tokenizer(tier),
            calibrate=Calibrator.from_params(spec.calibration) if spec.calibration else None,
            is_last=spec.is_last,
            reference_price=(spec.reference or tier).price,
            tag_key=spec.tag_key,
        )

    return factory


register_kind("openai")(_llm(OpenAIModel))
register_kind("llamacpp")(_llm(LlamaCppModel))


@register_kind("local")
def _local(spec: RunnerSpec) -> Runner:
    reference = None
    if spec.reference is not None and spec.reference.kind != "local":
        # What the document would have cost at the last tier: the baseline of the saving.
        reference = reference_cost(spec.taxonomy, spec.reference, spec.tokenizer(spec.reference))
    return LocalRunner(
        taxonomy=spec.taxonomy,
        tier=spec.tier,
        model=spec.local_model,
        model_name=spec.local_model_name,
        is_last=spec.is_last,
        reference=reference,
    )
