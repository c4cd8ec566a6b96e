"""Sentence embeddings are stored once per text: a retrain embeds only the texts it has not seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifiers import embeddings
from classifiers.local import TrainParams, label_text
from core.config import LocalSettings
from store import examples, taxonomies, text_embeddings
from store.db import session_scope
from tests.test_local_tier import rows, store, taxonomy_of
from worker import training

pytestmark = pytest.mark.skipif(
    not embeddings.available("onnx-q8"), reason="the `embeddings` extra is not installed"
)


def test_a_retrain_embeds_only_new_texts_and_stored_vectors_are_the_embedders(
    tmp_path: Path, database_url: str
) -> None:
    engine, settings = store(tmp_path, database_url, LocalSettings(min_support=5, target_accuracy=0.8))
    data = rows("ag_news_test", chars=200)
    tax = taxonomy_of(data, "news")
    params = TrainParams(features="embeddings", embed_scales=(1.0,), target_accuracy=0.8, min_support=5)
    with session_scope(engine) as session:
        taxonomies.put_taxonomy(session=session, spec=tax)
        examples.add_examples(session=session, taxonomy=tax, items=data[:60])
    first = training.train_version(engine=engine, settings=settings, taxonomy=tax, params=params)
    names = {label_text(c) for c in tax.label_names}  # the label-name prior is embedded too
    assert first.metrics["embeddings"]["stored"] == 0
    assert first.metrics["embeddings"]["computed"] == 60 + len(names)
    with session_scope(engine) as session:
        examples.add_examples(session=session, taxonomy=tax, items=data[60:70])
    second = training.train_version(engine=engine, settings=settings, taxonomy=tax, params=params)
    assert second.metrics["embeddings"] == {
        "embedder": embeddings.embedder_key("onnx-q8", 128),
        "stored": 60 + len(names),
        "computed": 10,
    }
    texts = [r["text"] for r in data[:70]]
    with session_scope(engine) as session:
        kept = text_embeddings.load(
            session=session, embedder=second.metrics["embeddings"]["embedder"], texts=texts
        )
        other = text_embeddings.load(
            session=session, embedder=embeddings.embedder_key("onnx-q8", 64), texts=texts
        )
    assert set(kept) == set(texts) and other == {}  # another cut gives other vectors: kept apart
    fresh = embeddings.get_embedder("onnx-q8", 128).embed(texts[:5])
    assert np.allclose(np.vstack([kept[t] for t in texts[:5]]), fresh, atol=1e-4)
    engine.dispose()


def test_a_prefork_worker_process_embeds_on_its_share_of_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert LocalSettings().threads_per_process(2) == 2 and LocalSettings().threads_per_process(8) == 1
    assert LocalSettings(embed_threads=3).threads_per_process(2) == 3
    try:
        embeddings.configure(threads=1)
        one = embeddings.get_embedder("onnx-q8", 32)
        embeddings.configure(threads=2)
        two = embeddings.get_embedder("onnx-q8", 32)
    finally:
        embeddings.configure(threads=None)
    assert isinstance(one, embeddings.OnnxMiniLM) and isinstance(two, embeddings.OnnxMiniLM)
    assert one.session.get_session_options().intra_op_num_threads == 1
    assert two.session.get_session_options().intra_op_num_threads == 2
    assert np.allclose(one.embed(["Stocks fell."]), two.embed(["Stocks fell."]), atol=1e-5)
