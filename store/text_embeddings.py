"""Stored sentence embeddings, by embedder and text hash: a text is embedded once, whatever reads it again."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np
from sqlmodel import Session, col, select

from store.db import insert_or_skip
from store.models import TextEmbedding, utcnow

CHUNK = 500  # hashes per IN (...) list: well under SQLite's bound variables


def text_hash(text: str) -> str:
    """The key a text's embedding is stored under."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load(*, session: Session, embedder: str, texts: Iterable[str]) -> dict[str, np.ndarray]:
    """The stored embeddings of those texts that have one (text -> float32 vector)."""
    by_hash = {text_hash(t): t for t in texts}
    hashes = list(by_hash)
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(hashes), CHUNK):
        query = select(TextEmbedding.text_hash, TextEmbedding.vector).where(
            col(TextEmbedding.embedder) == embedder,
            col(TextEmbedding.text_hash).in_(hashes[start : start + CHUNK]),
        )
        for key, vector in session.exec(query):
            out[by_hash[key]] = np.frombuffer(vector, dtype=np.float32)
    return out


def save(*, session: Session, embedder: str, vectors: Mapping[str, np.ndarray]) -> int:
    """Store embeddings not stored yet (a concurrent writer's copy wins: it is the same vector)."""
    now = utcnow()
    rows = [
        {
            "embedder": embedder,
            "text_hash": text_hash(t),
            "vector": np.asarray(v, dtype=np.float32).tobytes(),
            "created_at": now,
        }
        for t, v in vectors.items()
    ]
    if not rows:
        return 0
    statement = insert_or_skip(session, TextEmbedding)
    for start in range(0, len(rows), CHUNK):
        session.execute(statement, rows[start : start + CHUNK])
    return len(rows)
