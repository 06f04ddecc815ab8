"""`run:` how a sweep is executed; none of it changes what a run computes (not part of run ids)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spec.common import SpecModel


class RunPolicy(SpecModel):
    """Checkpointing, failure handling and where outputs go."""

    checkpoint_every: int = Field(default=1000, gt=0, description="Steps between checkpoints.")
    keep: int = Field(default=2, gt=0, description="Checkpoints kept per run (the newest).")
    failure_policy: Literal["continue", "fail_fast"] = Field(
        default="continue",
        description="When a run fails (e.g. NaN loss): record it and go on with the sweep, or stop the sweep.",
    )
    output_dir: str = Field(
        default="runs",
        description=(
            "Root of all outputs, relative to the directory `engine` is invoked from (not the spec "
            "file). A run lives in <output_dir>/<name>/<run id>/."
        ),
    )
