"""Model endpoints behind one small Protocol; classifiers/runners.py picks the adapter by tier kind."""

from classifiers.providers.base import ChatModel, Completion
from classifiers.providers.openai_compat import LlamaCppModel, OpenAIModel

__all__ = ["ChatModel", "Completion", "LlamaCppModel", "OpenAIModel"]
