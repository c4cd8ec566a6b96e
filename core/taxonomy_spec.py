"""Taxonomies as users write them (YAML, JSON, settings), and the bundled samples' taxonomy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LabelSpec(BaseModel):
    """A label with what it means, as the model is told."""

    name: str
    description: str = ""
    examples: list[str] = Field(default_factory=list)


class TaxonomySpec(BaseModel):
    """A taxonomy as users write it (YAML, JSON, settings)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    labels: list[LabelSpec] = Field(min_length=2)
    multi_label: bool = False
    none_label: str | None = None

    @model_validator(mode="after")
    def _unique_labels(self) -> TaxonomySpec:
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names):
            raise ValueError("label names must be unique")
        if self.none_label is not None and self.none_label in names:
            raise ValueError("none_label must not repeat a label")
        return self


def default_taxonomy() -> TaxonomySpec:
    """The taxonomy of the bundled samples: four news topics."""
    return TaxonomySpec(
        name="news",
        description="Topic of a short news item.",
        labels=[
            LabelSpec(name="World", description="International affairs, politics, conflicts, diplomacy"),
            LabelSpec(name="Sports", description="Games, athletes, teams, tournaments"),
            LabelSpec(name="Business", description="Companies, markets, economy, finance"),
            LabelSpec(
                name="Sci/Tech",
                description="Science, technology, computing, space, health research",
            ),
        ],
    )
