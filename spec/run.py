"""`run:` how a sweep is executed; none of it changes what a run computes (not part of run ids)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spec.common import SpecModel


class WandbLogging(SpecModel):
    """One Weights & Biases run per engine run, named by its run id and grouped by the experiment."""

    project: str = Field(min_length=1, description="W&B project the runs are logged to.")
    entity: str | None = Field(
        default=None,
        min_length=1,
        description="W&B user or team owning the project; null: the logged-in account's default entity.",
    )
    mode: Literal["online", "offline"] = Field(
        default="online",
        description=(
            "online: stream to the W&B server (needs `wandb login` or WANDB_API_KEY); offline: write "
            "only to <run dir>/wandb/, uploaded later with `wandb sync`."
        ),
    )


class RunPolicy(SpecModel):
    """Checkpointing, failure handling and where outputs go."""

    checkpoint_every: int = Field(default=1000, gt=0, description="Steps between checkpoints.")
    checkpoint_min_seconds: float | None = Field(
        default=None, gt=0,
        description="Skip a save that checkpoint_every calls for while fewer than this many seconds "
                    "have passed since the run's last save (or its start, or resume); the final "
                    "save and the save on SIGTERM always happen. Runs of a few seconds then pay "
                    "for no mid-run saves; a killed run loses at most this long plus "
                    "checkpoint_every steps. On several processes, process 0's clock decides for "
                    "all. null: a save every checkpoint_every steps.")
    keep: int = Field(default=2, gt=0, description="Checkpoints kept per run (the newest).")
    pack_size: int | None = Field(
        default=None, gt=0,
        description="At most this many runs that share a model shape (and optimizer, schedules' "
                    "kinds and batch) train together as one vmapped program, each with its own "
                    "checkpoints, status and result, and numbers equal to its training alone up to "
                    "float rounding. null: on a GPU or TPU as many as half its memory holds by the "
                    "engine's estimate; on a CPU 1, where a pack measured slower than its runs one "
                    "after another. 1: every run alone.")
    failure_policy: Literal["continue", "fail_fast"] = Field(
        default="continue",
        description=(
            "What a run whose training loss turns NaN/inf (recorded as failed, with its step) does to the "
            "sweep: continue trains the remaining runs, fail_fast trains no further run (engine run exits 1 "
            "either way). Only a sweep trained one run after another (--executor local) can stop early: "
            "--executor ray and slurm refuse fail_fast. Other errors (bad input, a full disk) stop engine "
            "run under either policy."
        ),
    )
    output_dir: str = Field(
        default="runs",
        description=(
            "Root of all outputs, relative to the directory `engine` is invoked from (not the spec "
            "file). A run lives in <output_dir>/<name>/<run id>/."
        ),
    )
    tensorboard: bool = Field(
        default=True,
        description=(
            "Write TensorBoard event files of the run's scalars (train and eval loss, learning rate, "
            "scheduled sparsity, steps/s) to <run dir>/tensorboard/; false: metrics.jsonl only."
        ),
    )
    wandb: WandbLogging | None = Field(
        default=None,
        description=(
            "Also log the same scalars to Weights & Biases (needs `pip install "
            "'sparse-scaling-engine[wandb]'`); null: no W&B."
        ),
    )
