"""Helpers the tests share: views into a run's outputs and independent checks of the engine's math.

They live here, not in the installed package, because only tests use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from scipy.optimize import minimize_scalar

from engine.data.layouts import EOS_ID, PAD_ID
from engine.fit.law import LawCoefficients, predict_loss
from engine.models import Params
from engine.planning.costs import c_mul_from_alpha
from engine.planning.plan import RunPlan
from engine.training.build import build_learning_rate, inner_optimizer
from engine.training.checkpoint import CheckpointStore
from engine.training.loop import RunSetup, programs_for


def final_params(run_dir: Path, setup: RunSetup) -> tuple[int, Params]:
    """The parameters of the newest verified checkpoint (for inspection and tests)."""
    with CheckpointStore(run_dir / "checkpoints", keep=setup.keep_checkpoints) as store:
        restored = store.restore_latest(programs_for(setup).target)
    if restored is None:
        raise FileNotFoundError(f"no usable checkpoint under {run_dir / 'checkpoints'}")
    return restored.step, jax.tree.map(np.asarray, restored.state.params)


def abstract_like(tree: Any) -> Any:
    """Shape/dtype skeleton of a pytree, the restore target Orbax wants."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def build_inner_optimizer(run: RunPlan) -> optax.GradientTransformation:
    spec = run.spec.optimizer
    return inner_optimizer(spec, build_learning_rate(spec.learning_rate, run.steps))


def optimal_sparsity_numerical(
    coefficients: LawCoefficients, nonzeros: float, compute: float, k: float, alpha: float
) -> float:
    """S_opt by direct minimisation of L(S, N, C / (k N c_mul(S))) over S in [0, 1) (a check)."""

    def loss_at(log_density: float) -> float:
        sparsity = -np.expm1(log_density)
        data = compute / (k * nonzeros * c_mul_from_alpha(sparsity, alpha))
        return float(predict_loss(coefficients, sparsity, nonzeros, data))

    # Search in log(1 - S) so sparsities near 1 are resolved as finely as those near 0.
    result = minimize_scalar(
        loss_at, bounds=(np.log(1e-12), 0.0), method="bounded", options={"xatol": 1e-12}
    )
    return float(-np.expm1(result.x))


def reconstruct(inputs: np.ndarray, targets: np.ndarray, vocab_size: int, sentinels: int) -> np.ndarray:
    """Undo span corruption for one example: splice each target span back at its sentinel.
    Used by tests to prove no token is lost or reordered."""
    is_sentinel = lambda token: vocab_size - sentinels <= token < vocab_size  # noqa: E731
    spans: dict[int, list[int]] = {}
    current: int | None = None
    for token in targets.tolist():
        if token in (EOS_ID, PAD_ID):
            break
        if is_sentinel(token):
            current = token
            spans[current] = []
        elif current is not None:
            spans[current].append(token)
    restored: list[int] = []
    for token in inputs.tolist():
        if token == EOS_ID:
            break
        restored.extend(spans[token] if is_sentinel(token) else [token])
    return np.asarray(restored, dtype=np.int32)
