"""Spec -> training objects: pruning schedules in steps, the optimizer chain keeps masks flowing."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import pytest
from helpers import build_inner_optimizer

from engine.errors import UserError
from engine.planning.plan import plan_experiment
from engine.sparsity import DenseSchedule, GradualSchedule
from engine.training.build import build_schedule
from spec.sparsity import GmpSchedule, SparsitySpec

TINY_NM = Path(__file__).parent / "fixtures" / "run" / "tiny_nm.yaml"


def _gmp(level: float, interval: int) -> SparsitySpec:
    return SparsitySpec(level=level, schedule=GmpSchedule(kind="gmp", start=0.25, end=0.75, interval=interval))


def test_gmp_fractions_become_steps() -> None:
    schedule = build_schedule(_gmp(0.5, 10), steps=400, where="run x")
    assert schedule == GradualSchedule(0.5, start_step=100, end_step=300, update_interval=10)


def test_level_zero_is_a_dense_schedule_whatever_the_schedule_kind() -> None:
    """A sweep's dense baseline (sparsity.level 0 under a gmp schedule) carries no masks."""
    assert build_schedule(_gmp(0.0, 10), steps=400, where="run x") == DenseSchedule()


def test_gmp_that_cannot_reach_its_level_is_refused() -> None:
    # end = 112 steps; the update that reaches the level would be at step 200 > 150 steps
    with pytest.raises(UserError, match="does not reach sparsity 0.5 within 150 steps"):
        build_schedule(_gmp(0.5, 100), steps=150, where="run x")


def test_gradient_clipping_chain_still_passes_masks_to_adafactor() -> None:
    """With grad_clip_norm the optimizer is a chain; the sparsity-aware RMS of A.1 must still see
    the masks (else it silently falls back to the plain RMS, sqrt(1/2) smaller here)."""
    run = plan_experiment(TINY_NM, [
        "optimizer={kind: adafactor, learning_rate: {kind: constant, value: 0.1}, grad_clip_norm: 100.0}",
    ])[0]
    optimizer = build_inner_optimizer(run)
    params = {"w": jnp.concatenate([jnp.zeros(8), jnp.ones(8)]).reshape(4, 4)}
    grads = {"w": jnp.full((4, 4), 1e-3)}
    masks = {"w": params["w"] != 0}
    aware, _ = optimizer.update(grads, optimizer.init(params), params, masks=masks)
    plain, _ = optimizer.update(grads, optimizer.init(params), params)
    assert float(aware["w"][0, 0]) == pytest.approx(float(plain["w"][0, 0]) * 2**0.5, rel=1e-5)
