"""`optimizer:` Adafactor (the paper's, appendix A.1) or AdamW, and learning-rate schedules.

Warmups are written in steps, cooldowns as fractions of the run, so that one optimizer block
serves every training length of a sweep. engine/training/optim.py builds these.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from spec.common import SpecModel

_WARMUP = "Steps of linear warmup from 0 to the peak rate."
_COOLDOWN = "Final fraction of the run over which the rate decays linearly to 0."


class ConstantRate(SpecModel):
    """lr(t) = value."""

    kind: Literal["constant"] = Field(description="Schedule type.")
    value: float = Field(gt=0, description="The learning rate.")


class RsqrtRate(SpecModel):
    """Reciprocal square root: lr(t) = peak * sqrt(warmup_steps / max(t, warmup_steps)): constant
    at the peak for `warmup_steps` (T5: peak 0.01, 10k steps = 1/sqrt(max(t, 1e4))), or a linear
    ramp to the peak over them with `linear_warmup` (ViT, Zhai et al.)."""

    kind: Literal["rsqrt"] = Field(description="Schedule type.")
    peak: float = Field(gt=0, description="Rate at step warmup_steps.")
    warmup_steps: int = Field(gt=0, description="Steps before the 1/sqrt(t) decay begins (its timescale).")
    linear_warmup: bool = Field(default=False,
                                description="Ramp linearly from 0 to the peak during warmup instead of holding it.")


class CosineRate(SpecModel):
    """Linear warmup to `peak`, then cosine decay to `final_fraction * peak` at the end of the run."""

    kind: Literal["cosine"] = Field(description="Schedule type.")
    peak: float = Field(gt=0, description="Rate at the end of warmup.")
    warmup_steps: int = Field(default=0, ge=0, description=_WARMUP)
    final_fraction: float = Field(default=0.0, ge=0, le=1, description="Final rate as a fraction of the peak.")


class WarmupConstantCooldownRate(SpecModel):
    """Warmup, constant, cooldown: linear warmup to `peak`, hold, then decay linearly to 0 over the
    last `cooldown_fraction` of the run. The warmup and the cooldown must fit in every run of the
    sweep together: `engine validate --plan` and `engine run` refuse a run they exceed, at
    warmup_steps (the warmup is never cut short)."""

    kind: Literal["warmup_constant_cooldown"] = Field(description="Schedule type.")
    peak: float = Field(gt=0, description="The constant rate between warmup and cooldown.")
    warmup_steps: int = Field(default=0, ge=0, description=_WARMUP)
    cooldown_fraction: float = Field(default=0.2, ge=0, le=1, description=_COOLDOWN)


LearningRate = Annotated[
    ConstantRate | RsqrtRate | CosineRate | WarmupConstantCooldownRate, Field(discriminator="kind")
]

_GRAD_CLIP = "Clip the gradient to this global L2 norm before the update; null for no clipping."
_WEIGHT_DECAY = "Decoupled weight decay, multiplied by the learning rate."


class AdafactorOptimizer(SpecModel):
    """Adafactor with an unfactored second moment (appendix A: factoring is not studied for
    pruning), optional relative step size and RMS update clipping. With `sparsity_aware_rms`
    both RMS values are computed over unpruned weights only (appendix A.1)."""

    kind: Literal["adafactor"] = Field(description="Optimizer type.")
    learning_rate: LearningRate = Field(description="Learning-rate schedule.")
    relative_step: bool = Field(
        default=True,
        description="Scale each tensor's step by max(min_param_scale, RMS(tensor)) (T5's parameter scaling).",
    )
    sparsity_aware_rms: bool = Field(
        default=True,
        description="Compute the parameter RMS and the update-clipping RMS over unpruned weights only (appendix A.1).",
    )
    clip_threshold: float | None = Field(
        default=1.0, gt=0, description="Clip each update to this RMS (Adafactor's d); null for no clipping."
    )
    decay_rate: float = Field(
        default=0.8, gt=0, le=1, description="Second-moment decay beta2(t) = 1 - t^(-decay_rate)."
    )
    beta2_cap: float | None = Field(
        default=None, gt=0, le=1, description="Upper bound on beta2(t) (Zhai et al.: 0.999); null for none (T5)."
    )
    momentum: float | None = Field(
        default=None, ge=0, lt=1, description="First-moment decay beta1; null for no momentum (T5)."
    )
    eps: float = Field(default=1e-30, gt=0, description="Added to the squared gradient.")
    min_param_scale: float = Field(default=1e-3, gt=0, description="Floor of the parameter RMS in the relative step.")
    weight_decay: float = Field(default=0.0, ge=0, description=_WEIGHT_DECAY)
    grad_clip_norm: float | None = Field(default=None, gt=0, description=_GRAD_CLIP)


class AdamwOptimizer(SpecModel):
    """AdamW (decoupled weight decay)."""

    kind: Literal["adamw"] = Field(description="Optimizer type.")
    learning_rate: LearningRate = Field(description="Learning-rate schedule.")
    b1: float = Field(default=0.9, ge=0, lt=1, description="First-moment decay.")
    b2: float = Field(default=0.999, ge=0, lt=1, description="Second-moment decay.")
    eps: float = Field(default=1e-8, gt=0, description="Added to the root of the second moment.")
    weight_decay: float = Field(default=0.0, ge=0, description=_WEIGHT_DECAY)
    grad_clip_norm: float | None = Field(default=None, gt=0, description=_GRAD_CLIP)


OptimizerSpec = Annotated[AdafactorOptimizer | AdamwOptimizer, Field(discriminator="kind")]
