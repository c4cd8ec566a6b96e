"""Answer models generated from taxonomies."""

import pytest
from pydantic import ValidationError

from classifiers.taxonomy import Taxonomy, answer_models, strict_schema
from core.taxonomy_spec import LabelSpec, TaxonomySpec, default_taxonomy


def test_label_is_an_enum_of_the_taxonomy() -> None:
    item, batch = answer_models(Taxonomy(**default_taxonomy().model_dump()), stated_confidence=False)
    assert item.model_validate({"ref": 1, "label": "Sports"})
    with pytest.raises(ValidationError):
        item.model_validate({"ref": 1, "label": "Weather"})
    with pytest.raises(ValidationError):
        item.model_validate({"ref": 1, "label": "Sports", "extra": 1})
    schema = strict_schema(batch)
    assert batch.__doc__ and "exactly once" in batch.__doc__
    item_schema = schema["$defs"]["DocumentLabel"]
    assert item_schema["additionalProperties"] is False
    assert item_schema["properties"]["label"]["enum"] == ["World", "Sports", "Business", "Sci/Tech"]


def test_multi_label_and_none_label() -> None:
    tax = Taxonomy(
        name="t",
        labels=[LabelSpec(name="a"), LabelSpec(name="b")],
        multi_label=True,
        none_label="other",
    )
    item, _ = answer_models(tax, stated_confidence=True)
    parsed = item.model_validate({"ref": 2, "labels": ["a", "other"], "confidence": 0.5})
    assert parsed.labels == ["a", "other"]  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        item.model_validate({"ref": 2, "labels": ["c"], "confidence": 0.5})


def test_taxonomy_spec_rejects_duplicates() -> None:
    with pytest.raises(ValidationError):
        TaxonomySpec(name="x", labels=[LabelSpec(name="a"), LabelSpec(name="a")])
