"""`init:` where a run's weights start (docs/spec-reference.md).

`pretrained` loads parameters only: optimizer state and masks start fresh and the run has its own
schedule clock (the paper prunes a pretrained model immediately, over 5.6% of the pretraining
budget). Resuming an interrupted run is automatic and is not an init. Validation checks the shape
of a source only; finding the source run or checkpoint happens when the run is planned for training.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from spec.common import SpecModel

Scalar = str | int | float | bool


class ScratchInit(SpecModel):
    """Random initialisation."""

    kind: Literal["scratch"] = Field(description="Init type.")


class RunSource(SpecModel):
    """A finished run of another experiment spec, picked by its sweep coordinates."""

    kind: Literal["run"] = Field(description="Source type.")
    spec: str = Field(description="Path of the other experiment spec, relative to this spec file.")
    where: dict[str, Scalar] = Field(
        default_factory=dict,
        description=(
            "Dotted field path -> value, selecting exactly one run of that spec's sweep, "
            "e.g. {model.nonzeros: 20000, sparsity.level: 0, data.steps: 600}."
        ),
    )


class CheckpointSource(SpecModel):
    """A checkpoint directory written by this engine."""

    kind: Literal["checkpoint"] = Field(description="Source type.")
    path: str = Field(description="Checkpoint directory, relative to this spec file. Not checked by validation.")
    step: int = Field(ge=0, description="Which saved step to load.")


Source = Annotated[RunSource | CheckpointSource, Field(discriminator="kind")]


class PretrainedInit(SpecModel):
    """Start from the parameters of an earlier run or checkpoint: parameters only (the optimizer
    state and the masks start fresh, and the run's schedules start at its own step 0)."""

    kind: Literal["pretrained"] = Field(description="Init type.")
    source: Source = Field(description="Where the parameters come from: {kind: run, ...} or {kind: checkpoint, ...}.")
    budget_fraction: float | None = Field(
        default=None,
        gt=0,
        description=(
            "This run's training data D as a fraction of the source run's D (the paper: 0.056 of the "
            "pretraining budget): steps = round(fraction x source D / (batch_size x tokens per example)), "
            "at least 1, so another batch size still gives that share of the data. A checkpoint source "
            "has no recorded D: then steps = round(fraction x its step). When set it decides the length: "
            "a data.steps inherited from an extended spec is replaced (`engine plan` shows the steps)."
        ),
    )


InitSpec = Annotated[ScratchInit | PretrainedInit, Field(discriminator="kind")]
