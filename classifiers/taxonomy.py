"""Taxonomies at run time, and the pydantic answer models generated from them."""

from __future__ import annotations

from functools import cached_property, lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from core.errors import InvalidInput
from core.taxonomy_spec import LabelSpec, TaxonomySpec


class Taxonomy(TaxonomySpec):
    """A stored taxonomy version, as the classifiers use it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1

    @cached_property
    def label_names(self) -> list[str]:
        """Every label the model may answer, the none label last."""
        names = [label.name for label in self.labels]
        return [*names, self.none_label] if self.none_label else names

    def check_label(self, label: str | None, labels: list[str] | None, where: str) -> None:
        """InvalidInput unless the label (or labels) fit this taxonomy and its cardinality."""
        if self.multi_label:
            if label is not None or labels is None:
                raise InvalidInput(f"{where}: taxonomy {self.name} is multi-label; give `labels`")
            chosen = labels
        else:
            if labels is not None or label is None:
                raise InvalidInput(f"{where}: taxonomy {self.name} is single-label; give `label`")
            chosen = [label]
        known = set(self.label_names)
        unknown = [x for x in chosen if x not in known]
        if unknown:
            raise InvalidInput(f"{where}: {unknown} not in taxonomy {self.name} ({sorted(known)})")

    def describe(self) -> str:
        """The label list as the model reads it."""
        lines = []
        for label in self.labels:
            line = f"- {label.name}"
            if label.description:
                line += f": {label.description}"
            lines.append(line)
            lines.extend(f'    e.g. "{example}"' for example in label.examples[:3])
        if self.none_label:
            lines.append(f"- {self.none_label}: none of the labels above applies")
        return "\n".join(lines)


def from_dataset_labels(name: str, labels: list[str], *, multi_label: bool) -> Taxonomy:
    """A taxonomy built from a dataset's label set, for eval without a stored one."""
    return Taxonomy(
        name=name,
        labels=[LabelSpec(name=label) for label in sorted(set(labels))],
        multi_label=multi_label,
    )


def answer_models(taxonomy: Taxonomy, *, stated_confidence: bool) -> tuple[type[BaseModel], type[BaseModel]]:
    """The per-document result model and the batch answer model for a taxonomy."""
    label_type: Any = Literal[tuple(taxonomy.label_names)]
    fields: dict[str, Any] = {"ref": (int, Field(description="The ref of the document"))}
    if taxonomy.multi_label:
        fields["labels"] = (list[label_type], Field(description="Every label that applies"))
    else:
        fields["label"] = (label_type, Field(description="The one label that fits best"))
    if stated_confidence:
        fields["confidence"] = (float, Field(description="Probability (0 to 1) that it is right"))
    item = create_model("DocumentLabel", __config__=ConfigDict(extra="forbid"), **fields)
    batch = create_model(
        "classify_documents",
        __config__=ConfigDict(extra="forbid"),
        __doc__=("Record the label of every document given, one result per ref, each ref exactly once."),
        results=(list[item], Field(description="One result per document ref")),
    )
    return item, batch


@lru_cache(maxsize=256)
def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """model's JSON schema in the strict form OpenAI requires (closed objects, all required).

    Cached per model class and shared (do not change it): every request of a tier sends the same one,
    and pydantic building it again each time was 3.6% of a worker's busy time (docs/benchmarks.md)."""
    schema = model.model_json_schema()

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema
