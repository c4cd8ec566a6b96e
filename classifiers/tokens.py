"""Token counting and head-and-tail truncation with a real tokenizer where one is at hand."""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)
ELLIPSIS = "\n[…]\n"


class Tokenizer(Protocol):
    """Counts and cuts text in a model's tokens."""

    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


class TiktokenTokenizer:
    """OpenAI's BPE (tiktoken); needs the encoding file, which tiktoken caches after one fetch."""

    def __init__(self, encoding: str) -> None:
        import tiktoken

        self._enc = tiktoken.get_encoding(encoding)
        self.name = f"tiktoken:{encoding}"

    def encode(self, text: str) -> list[int]:
        return list(self._enc.encode(text, disallowed_special=()))

    def decode(self, tokens: list[int]) -> str:
        return str(self._enc.decode(tokens))


class GGUFTokenizer:
    """The tokenizer inside a GGUF file, read by llama.cpp without loading the weights."""

    def __init__(self, path: Path) -> None:
        from llama_cpp import Llama

        self._llama = Llama(model_path=str(path), vocab_only=True, verbose=False)
        self.name = f"gguf:{path.name}"

    def encode(self, text: str) -> list[int]:
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def decode(self, tokens: list[int]) -> str:
        return self._llama.detokenize(tokens).decode("utf-8", errors="replace")


_PIECE = re.compile(r"\w{1,4}|[^\w\s]|\s+")


class ApproxTokenizer:
    """A stand-in when no real tokenizer loads: word pieces of up to 4 characters."""

    name = "approx"

    def __init__(self) -> None:
        self._pieces: dict[int, str] = {}
        self._ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        out = []
        for piece in _PIECE.findall(text):
            if piece not in self._ids:
                self._ids[piece] = len(self._ids)
                self._pieces[self._ids[piece]] = piece
            out.append(self._ids[piece])
        return out

    def decode(self, tokens: list[int]) -> str:
        return "".join(self._pieces[t] for t in tokens)


@lru_cache(maxsize=16)
def get_tokenizer(spec: str, weights_path: str | None = None) -> Tokenizer:
    """The tokenizer named by spec (tiktoken:<enc> | gguf | approx), falling back to approx."""
    try:
        if spec.startswith("tiktoken:"):
            return TiktokenTokenizer(spec.split(":", 1)[1])
        if spec == "gguf" and weights_path and Path(weights_path).exists():
            return GGUFTokenizer(Path(weights_path))
    except Exception as exc:  # an offline machine without the tiktoken file, or no llama_cpp
        log.warning("tokenizer %s unavailable (%s); counting approximately", spec, exc)
    return ApproxTokenizer()


def truncate(text: str, tokenizer: Tokenizer, budget: int) -> tuple[str, int]:
    """text cut to budget tokens, keeping two thirds from the head and a third from the tail."""
    tokens = tokenizer.encode(text)
    if len(tokens) <= budget:
        return text, len(tokens)
    head = (budget * 2) // 3
    tail = budget - head
    cut = tokenizer.decode(tokens[:head]) + ELLIPSIS + tokenizer.decode(tokens[-tail:])
    return cut, budget
