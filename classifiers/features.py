"""The local tier's feature maps: TF-IDF word and character n-grams, sentence embeddings, or both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, hstack

from classifiers import embeddings

FEATURES = ("tfidf", "embeddings", "tfidf+embeddings")


@dataclass
class Features:
    """A fitted feature map; embeddings are computed once per text through a shared cache."""

    kind: str
    embed_backend: str = "onnx-q8"
    embed_max_tokens: int = 128
    vectorizer: Any = None
    embed_scale: float = 1.0  # unit vectors times this (x10 = 100x weaker regularisation of their weights)

    @property
    def name(self) -> str:
        """The kind, and the embeddings' scale where it is not 1 ("embeddings@x10")."""
        return (
            self.kind
            if self.embed_scale == 1.0 or "embeddings" not in self.kind
            else f"{self.kind}@x{self.embed_scale:g}"
        )

    def fit(self, texts: Sequence[str]) -> Features:
        """Learn the n-gram vocabulary (embeddings need no fitting)."""
        if "tfidf" in self.kind:
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.pipeline import FeatureUnion

            self.vectorizer = FeatureUnion(
                [
                    ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=50_000)),
                    (
                        "char",
                        TfidfVectorizer(
                            analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, max_features=100_000
                        ),
                    ),
                ]
            ).fit(texts)
            for _, step in self.vectorizer.transformer_list:
                if hasattr(step, "stop_words_"):
                    step.stop_words_ = None  # pruned terms, only for introspection; big when pickled
        return self

    def transform(
        self, texts: Sequence[str], cache: dict[str, np.ndarray] | None = None, tfidf: Any = None
    ) -> csr_matrix:
        """One row of features per text (tfidf: the texts' n-gram rows, already transformed)."""
        blocks = []
        if "tfidf" in self.kind:
            blocks.append(self.vectorizer.transform(texts) if tfidf is None else tfidf)
        if "embeddings" in self.kind:
            vectors = self.embed(texts, {} if cache is None else cache)
            blocks.append(csr_matrix(vectors * self.embed_scale if self.embed_scale != 1.0 else vectors))
        return hstack(blocks).tocsr() if len(blocks) > 1 else csr_matrix(blocks[0])

    def embed(self, texts: Sequence[str], cache: dict[str, np.ndarray]) -> np.ndarray:
        """Sentence embeddings of texts, computing only those not in cache."""
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            vectors = embeddings.get_embedder(self.embed_backend, self.embed_max_tokens).embed(missing)
            cache.update(zip(missing, vectors, strict=True))
        return np.vstack([cache[t] for t in texts]) if texts else np.zeros((0, embeddings.DIM))
