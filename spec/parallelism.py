"""`parallelism:` how one run is spread over devices, and what one run asks of a sweep scheduler.

None of it changes what a run computes beyond float tolerance, so it is not part of run ids: a
run checkpointed on 4 devices resumes on 1 and vice versa. Absent, a run uses one device.

The device mesh has two named axes: `data` (batches split over it, parameters replicated) and
`fsdp` (batches split over it too, and parameters split by `rules`, FSDP style). Each rule maps
a regular expression over '/'-joined parameter paths (e.g. `encoder/block_0/mlp/fc1/kernel`) to
the mesh axis each dimension of the matching tensors is split over; the first matching rule wins
and an unmatched parameter is replicated. Masks and optimizer state follow their parameters.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from spec.common import SpecModel, cross_field_error

MeshAxis = Literal["data", "fsdp"]
AxisSize = int | Literal["auto"]


class MeshSpec(SpecModel):
    """Device mesh: the size of each axis; their product is the number of devices a run uses."""

    data: AxisSize = Field(
        default=1,
        description=(
            "Data-parallel devices: batches are split over them, parameters replicated. An integer "
            "(>= 1), or `auto` for all devices left over by the other axis."
        ),
    )
    fsdp: AxisSize = Field(
        default=1,
        description=(
            "Fully sharded data-parallel devices: batches are split over them and parameters are "
            "split as `rules` say. An integer (>= 1), or `auto` for all devices left over."
        ),
    )

    @field_validator("data", "fsdp")
    @classmethod
    def _positive(cls, size: AxisSize) -> AxisSize:
        if isinstance(size, int) and size < 1:
            raise ValueError(f"an axis size is an integer >= 1 or `auto`, got {size}")
        return size

    @model_validator(mode="after")
    def _one_auto_at_most(self) -> MeshSpec:
        if self.data == "auto" and self.fsdp == "auto":
            raise cross_field_error("only one mesh axis can be `auto` (it takes the devices the other leaves)", at="fsdp")
        return self


class ShardingRule(SpecModel):
    """Parameters whose path matches `pattern` are split over mesh axes as `spec` says."""

    pattern: str = Field(
        description=(
            "Regular expression matched against the whole '/'-joined parameter path, e.g. "
            "`.*/(query|key|value|out|fc1|fc2)/kernel`."
        ),
    )
    spec: list[MeshAxis | None] = Field(
        description=(
            "One entry per tensor dimension: the mesh axis that dimension is split over, or null "
            "to keep it whole, e.g. [fsdp, null] splits a kernel's fan_in. Shorter than the tensor's "
            "rank: the remaining dimensions are kept whole."
        ),
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return pattern

    @field_validator("spec")
    @classmethod
    def _each_axis_once(cls, spec: list[MeshAxis | None]) -> list[MeshAxis | None]:
        used = [axis for axis in spec if axis is not None]
        if len(used) != len(set(used)):
            raise ValueError(f"a mesh axis can split only one dimension, got {spec}")
        return spec


class WorkerResources(SpecModel):
    """What one run asks of the scheduler when a sweep runs with `engine run --executor ray|slurm`."""

    cpus: int = Field(default=1, ge=1, description="CPU cores per run (Ray num_cpus, SLURM cpus_per_task).")
    gpus: int = Field(default=0, ge=0, description="GPUs per run (Ray num_gpus, SLURM gpus_per_node).")
    timeout_min: int = Field(default=60, ge=1, description="Time limit of one run's SLURM job, in minutes.")


class ParallelismSpec(SpecModel):
    """Device mesh and parameter sharding of one run; scheduler resources of one sweep worker."""

    mesh: MeshSpec = Field(default_factory=MeshSpec, description="Device mesh: {data: 1, fsdp: 1} (one device) by default.")
    rules: list[ShardingRule] = Field(
        default_factory=list,
        description="Parameter sharding over the mesh, first match wins; unmatched parameters are replicated.",
    )
    worker: WorkerResources = Field(
        default_factory=WorkerResources, description="Resources one run asks of a Ray or SLURM scheduler."
    )
