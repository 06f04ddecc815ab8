"""Sparsity-aware Adafactor (appendix A.1), AdamW and the learning-rate schedules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from engine import sparsity as sp
from engine.training import optim


def _half_pruned(seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """An 8x8 kernel with a checkerboard half of its weights pruned (exact zeros)."""
    weights = jax.random.normal(jax.random.key(seed), (8, 8)) + 3.0  # well above min_scale
    mask = (jnp.arange(8)[:, None] + jnp.arange(8)[None, :]) % 2 == 0
    return jnp.where(mask, weights, 0.0), mask


def test_sparsity_aware_rms_is_rms_of_unpruned_weights() -> None:
    weights, mask = _half_pruned()
    aware, plain = optim.masked_rms(weights, mask), optim.masked_rms(weights, None)
    kept = np.asarray(weights)[np.asarray(mask)]
    np.testing.assert_allclose(aware, np.sqrt(np.mean(kept**2)), rtol=1e-6)
    # A.1: half the weights pruned -> the plain RMS is sqrt(1/2) of the sparsity-aware one.
    np.testing.assert_allclose(plain, np.sqrt(0.5) * aware, rtol=1e-6)
    np.testing.assert_allclose(optim.masked_rms(weights, jnp.ones((), bool)), plain, rtol=1e-6)


@pytest.mark.parametrize("sparsity_aware", [True, False])
def test_relative_step_size_follows_unpruned_rms(sparsity_aware: bool) -> None:
    """The first Adafactor update of a kept weight is -lr * RMS(param) * sign(grad): with the
    sparsity-aware RMS it is sqrt(2) larger than with the plain RMS at 50% sparsity."""
    weights, mask = _half_pruned()
    params, masks = {"w": weights}, {"w": mask}
    grads = {"w": jax.random.normal(jax.random.key(1), (8, 8))}
    lr = 0.01
    tx = optim.adafactor(lr, sparsity_aware=sparsity_aware)
    updates, _ = tx.update(grads, tx.init(params), params, masks=masks)
    # Step 0: the second moment is exactly grad^2, so the raw update is sign(grad) (RMS 1: no clip).
    rms = optim.masked_rms(weights, mask if sparsity_aware else None)
    expected = -lr * rms * jnp.sign(grads["w"])
    np.testing.assert_allclose(updates["w"][mask], expected[mask], rtol=1e-5)
    aware = optim.masked_rms(weights, mask)
    step = jnp.abs(updates["w"][mask]).mean()
    ratio = 1.0 if sparsity_aware else np.sqrt(0.5)
    np.testing.assert_allclose(step, lr * aware * ratio, rtol=1e-5)


def test_masked_pruning_passes_masks_to_adafactor() -> None:
    """Through the wrapper, the steps of kept weights are sqrt(2) larger than without A.1."""
    weights, mask = _half_pruned()
    params, sparsified = {"w": weights}, {"w": True}
    grads = {"w": jax.random.normal(jax.random.key(1), (8, 8))}
    schedule = sp.OneShotSchedule(target=0.5, step=0)  # keeps exactly the non-zeros
    steps = {}
    for aware in (True, False):
        inner = optim.adafactor(0.01, sparsity_aware=aware)
        tx = sp.masked_pruning(inner, sparsified, schedule, sp.Unstructured())
        updates, state = tx.update(grads, tx.init(params), params)
        np.testing.assert_array_equal(state.masks["w"], mask)
        np.testing.assert_array_equal(updates["w"][~mask], 0.0)  # pruned stay zero
        steps[aware] = np.abs(np.asarray(updates["w"])[np.asarray(mask)])
    np.testing.assert_allclose(steps[False], np.sqrt(0.5) * steps[True], rtol=1e-5)


def test_update_clipping_ignores_pruned_entries() -> None:
    """Clipping by the RMS of kept entries only: large updates at pruned weights do not shrink
    the updates of the kept ones (A.1 applies the same RMS to the clipping threshold)."""
    mask = jnp.array([True, True, False, False])
    updates = {"w": jnp.array([1.0, -1.0, 10.0, 10.0])}
    clip_aware, clip_plain = optim.clip_by_rms(1.0), optim.clip_by_rms(1.0, sparsity_aware=False)
    aware, _ = clip_aware.update(updates, optax.EmptyState(), None, masks={"w": mask})
    plain, _ = clip_plain.update(updates, optax.EmptyState(), None, masks={"w": mask})
    np.testing.assert_allclose(aware["w"][:2], [1.0, -1.0])
    plain_rms = np.sqrt((1 + 1 + 100 + 100) / 4)
    np.testing.assert_allclose(plain["w"], updates["w"] / plain_rms, rtol=1e-6)


def test_grad_clip_norm_counts_only_unpruned_weights_gradients() -> None:
    """optimizer.grad_clip_norm under masked_pruning: the global norm is over the unpruned weights'
    gradients (3 and 4 here) and every dense leaf (the bias, 12): 13, not the 316 with the pruned
    ones, so every gradient is scaled by 2 / 13 before the optimizer sees it."""
    params = {"w": jnp.array([5.0, 6.0, 0.1, 0.2]), "b": jnp.zeros(1)}
    grads = {"w": jnp.array([3.0, 4.0, 100.0, 300.0]), "b": jnp.array([12.0])}
    seen: dict = {}

    def record(updates, state, params=None, **extra):  # what the optimizer after the clip receives
        seen.update(updates)
        return updates, state

    def clipped(clip: optax.GradientTransformation) -> dict:
        tx = sp.masked_pruning(
            optax.chain(clip, optax.GradientTransformationExtraArgs(optax.init_empty_state, record)),
            {"w": True, "b": False}, sp.OneShotSchedule(target=0.5, step=0), sp.Unstructured())
        tx.update(grads, tx.init(params), params)  # the one-shot masks keep 5.0 and 6.0
        return {k: np.asarray(v) for k, v in seen.items()}

    aware = clipped(optim.clip_by_global_norm(2.0))
    np.testing.assert_allclose(aware["w"], np.asarray(grads["w"]) * 2.0 / 13.0, rtol=1e-6)
    np.testing.assert_allclose(aware["b"], [12.0 * 2.0 / 13.0], rtol=1e-6)
    full = np.sqrt(9 + 16 + 100**2 + 300**2 + 144)
    plain = clipped(optim.clip_by_global_norm(2.0, sparsity_aware=False))
    np.testing.assert_allclose(plain["w"], np.asarray(grads["w"]) * 2.0 / full, rtol=1e-6)
    # Without masks (a dense run) it is optax's clip.
    ours, _ = optim.clip_by_global_norm(2.0).update(grads, optax.EmptyState())
    theirs, _ = optax.clip_by_global_norm(2.0).update(grads, optax.EmptyState())
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True))


def test_spec_grad_clip_norm_builds_the_unpruned_norm_clip() -> None:
    """The spec's grad_clip_norm is the masked clip: its first step's updates ignore pruned gradients."""
    from engine.training.build import inner_optimizer
    from spec.optimizer import AdafactorOptimizer

    spec = AdafactorOptimizer.model_validate({"kind": "adafactor", "learning_rate": {"kind": "constant", "value": 1.0},
                                              "grad_clip_norm": 1.0, "relative_step": False, "clip_threshold": None})
    params = {"w": jnp.array([5.0, 6.0, 0.1, 0.2])}
    steps = []
    for pruned_grads in ([100.0, 300.0], [0.0, 0.0]):
        tx = sp.masked_pruning(inner_optimizer(spec, optim.constant_lr(1.0)), {"w": True},
                               sp.OneShotSchedule(target=0.5, step=0), sp.Unstructured())
        state = tx.init(params)
        for grads in ([3.0, 4.0], [0.3, 0.1]):  # two steps: the clip's scale shows in the second
            updates, state = tx.update({"w": jnp.array([*grads, *pruned_grads])}, state, params)
        steps.append(np.asarray(updates["w"][:2]))
    np.testing.assert_allclose(steps[0], steps[1], rtol=1e-6)


def test_without_masks_matches_optax_unfactored_adafactor() -> None:
    """Dense (no masks): the same numbers as optax.adafactor(factored=False)."""
    params = {"w": jax.random.normal(jax.random.key(0), (6, 5)), "b": jnp.zeros(5)}
    ours, reference = optim.adafactor(0.01), optax.adafactor(0.01, factored=False)
    state_ours, state_ref = ours.init(params), reference.init(params)
    for i in range(4):
        keys = dict.fromkeys(params, jax.random.key(10 + i))  # one key per leaf name, as a pytree
        grads = jax.tree.map(lambda p, key: jax.random.normal(key, p.shape), params, keys)
        u_ours, state_ours = ours.update(grads, state_ours, params)
        u_ref, state_ref = reference.update(grads, state_ref, params)
        for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
        params = optax.apply_updates(params, u_ours)


def test_adafactor_options_and_adamw_run_under_jit() -> None:
    params = {"w": jnp.ones((4, 4))}
    grads = {"w": jnp.full((4, 4), 0.5)}
    for tx in (
        optim.adafactor(optim.rsqrt_lr(0.01, 10), momentum=0.9, weight_decay=1e-4, beta2_cap=0.999),
        optim.adamw(optim.constant_lr(1e-3)),
    ):
        masks = {"w": jnp.ones((4, 4), bool)}
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params, masks=masks)
        assert np.isfinite(np.asarray(updates["w"])).all() and (np.asarray(updates["w"]) < 0).all()


def test_learning_rate_schedules() -> None:
    t5 = optim.rsqrt_lr(0.01, warmup_steps=10_000)  # = 1 / sqrt(max(step, 1e4))
    for step in (0, 5_000, 10_000, 40_000, 1_000_000):
        np.testing.assert_allclose(t5(step), 1 / np.sqrt(max(step, 10_000)), rtol=1e-6)
    ramp = optim.rsqrt_lr(0.01, warmup_steps=100, linear_warmup=True)
    np.testing.assert_allclose(
        [ramp(0), ramp(50), ramp(100), ramp(400)], [0.0, 0.005, 0.01, 0.005], rtol=1e-6
    )

    cosine = optim.cosine_lr(1.0, warmup_steps=10, total_steps=110, end_value=0.1)
    np.testing.assert_allclose([cosine(0), cosine(5), cosine(10), cosine(60), cosine(110)],
                               [0.0, 0.5, 1.0, 0.55, 0.1], rtol=1e-5, atol=1e-7)

    wcc = optim.warmup_constant_cooldown_lr(
        1.0, warmup_steps=10, total_steps=100, cooldown_steps=20
    )
    np.testing.assert_allclose([wcc(s) for s in (0, 5, 10, 50, 80, 90, 100)],
                               [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(optim.constant_lr(3e-4)(123), 3e-4)
    with pytest.raises(ValueError, match="exceed total steps"):
        optim.warmup_constant_cooldown_lr(1.0, warmup_steps=60, total_steps=100, cooldown_steps=50)


def test_learning_rate_schedules_traced_equal_eager() -> None:
    """A run's schedule enters the compiled step as arrays (its numbers are pytree leaves)."""
    schedules = [
        optim.constant_lr(3e-4),
        optim.rsqrt_lr(0.01, warmup_steps=100, linear_warmup=True),
        optim.cosine_lr(1.0, warmup_steps=10, total_steps=110, end_value=0.1),
        optim.warmup_constant_cooldown_lr(3e-3, warmup_steps=20, total_steps=300, cooldown_steps=60),
        optim.warmup_constant_cooldown_lr(3e-3, warmup_steps=0, total_steps=300, cooldown_steps=0),
    ]
    steps = jnp.arange(0, 320, 7, dtype=jnp.int32)
    traced = jax.jit(lambda schedule, step: jax.vmap(schedule)(step))
    for schedule in schedules:
        assert all(np.ndim(leaf) == 0 for leaf in jax.tree.leaves(schedule)) and jax.tree.leaves(schedule)
        eager = np.array([schedule(step) for step in steps])
        # compiled code may fuse a * b + c into one rounding (an end value of -1.6e-10, not 0)
        np.testing.assert_allclose(traced(schedule, steps), eager, rtol=1e-6, atol=1e-9)
    # the warmup flag is structure, not a number
    assert jax.tree.structure(schedules[1]) != jax.tree.structure(optim.rsqrt_lr(0.01, 100))


def test_learning_rate_schedules_are_optax_arithmetic_bit_for_bit() -> None:
    """The hand-written reference step (bench/) and earlier results use optax's schedules; a
    last-place difference in the rate moves Adafactor's parameters by 1e-4 within 3 steps."""
    steps = [jnp.int32(k) for k in range(0, 620, 3)]
    pairs = [
        (optim.warmup_constant_cooldown_lr(3e-3, warmup_steps=20, total_steps=600, cooldown_steps=120),
         optax.join_schedules([optax.linear_schedule(0.0, 3e-3, 20), optax.constant_schedule(3e-3),
                               optax.linear_schedule(3e-3, 0.0, 120)], [20, 480])),
        (optim.cosine_lr(1e-2, warmup_steps=50, total_steps=600, end_value=1e-3),
         optax.warmup_cosine_decay_schedule(0.0, 1e-2, 50, 600, end_value=1e-3)),
    ]
    for ours, theirs in pairs:
        np.testing.assert_array_equal([ours(k) for k in steps], [theirs(k) for k in steps])
