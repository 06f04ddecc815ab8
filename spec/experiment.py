"""The top-level experiment spec: one YAML file (plus what it `extends`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from spec.analysis import AnalysisSpec
from spec.common import SpecModel, cross_field_error
from spec.data import IMAGE_SOURCES, DataSpec
from spec.init import InitSpec, ScratchInit
from spec.model import ModelSpec
from spec.optimizer import OptimizerSpec
from spec.parallelism import ParallelismSpec
from spec.run import RunPolicy
from spec.sparsity import SparsitySpec
from spec.sweep import SweepSpec


class ExperimentSpec(SpecModel):
    """A sparse scaling experiment: a model family, how it is sparsified, initialised, optimised
    and fed, the sweep over those settings, the analysis of the results, and how runs are executed."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Experiment name; outputs go to <run.output_dir>/<name>/. Letters, digits, '.', '_', '-'.",
        examples=["vit_sweep"],
    )
    extends: str | None = Field(
        default=None,
        description=(
            "Another spec file this one builds on, relative to this file: mappings are merged "
            "recursively (this file wins; a mapping with a different `kind` replaces the base's "
            "whole mapping), lists and scalars are replaced, and a `sweep` here replaces the base's."
        ),
    )
    seed: int = Field(default=0, ge=0,
                      description="Seed of parameter initialisation; the data order is the data source's own seed.")
    model: ModelSpec = Field(description="Model family, base shape and size.")
    sparsity: SparsitySpec = Field(description="Sparsity level, pattern, targets and schedule.")
    init: InitSpec = Field(
        default_factory=lambda: ScratchInit(kind="scratch"),
        description="Initialisation: {kind: scratch} or {kind: pretrained, source: ...}.",
    )
    optimizer: OptimizerSpec = Field(description="Optimizer and learning-rate schedule.")
    data: DataSpec = Field(description="Data source and training budget.")
    sweep: SweepSpec = Field(default_factory=SweepSpec, description="Axes over the fields above; absent for a single run.")
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec, description="Fits and reports computed from the results.")
    run: RunPolicy = Field(default_factory=RunPolicy, description="Checkpointing, failure policy and output directory.")
    parallelism: ParallelismSpec = Field(
        default_factory=ParallelismSpec,
        description="Device mesh and parameter sharding of one run, scheduler resources per run; not part of run ids.",
    )

    @model_validator(mode="after")
    def _parts_fit_the_family(self) -> ExperimentSpec:
        family = self.model.kind
        if self.sparsity.targets != "backbone" and family != "t5":
            raise cross_field_error(
                f"targets {self.sparsity.targets} is for t5 models only, this is a {family} model", at="sparsity.targets"
            )
        budget_fraction = getattr(self.init, "budget_fraction", None)
        if self.data.steps is None and self.data.flops is None and budget_fraction is None:
            raise cross_field_error("steps is required (or data.flops, or init.budget_fraction for a pretrained run)",
                                    at="data.steps")
        if self.data.flops is not None and (self.data.steps is not None or budget_fraction is not None):
            other = "data.steps" if self.data.steps is not None else "init.budget_fraction"
            raise cross_field_error(f"give one training budget, not {other} and data.flops", at="data.flops")
        source = self.data.source.kind
        wants_images = family == "vit"
        if (source in IMAGE_SOURCES) != wants_images:
            expected = "an image source" if wants_images else "a token source"
            raise cross_field_error(f"a {family} model needs {expected}, got {source}", at="data.source.kind")
        return self
