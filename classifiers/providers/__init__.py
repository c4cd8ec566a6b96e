"""Model endpoints behind one small Protocol, registered by endpoint kind."""

from classifiers.providers import openai_compat as _openai_compat  # noqa: F401  (registers kinds)
from classifiers.providers.base import ChatModel, Completion, UnknownModelKind, get_model, register

__all__ = ["ChatModel", "Completion", "UnknownModelKind", "get_model", "register"]
