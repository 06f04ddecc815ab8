"""Schedules, exact magnitude masks (incl. Algorithm 1 n:m) and the masked optax wrapper."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from engine import models
from engine import sparsity as sp
from engine.planning.sizing import ModelDims, nonzeros_at
from engine.sparsity.pruning import _scheduled_keep, with_final_keep
from engine.training import optim

# --- schedules ---------------------------------------------------------------------------------


def test_gmp_cubic_schedule_values() -> None:
    """S (1 - (1 - t)^3), t from the step rounded down to the interval (hand-computed)."""
    schedule = sp.GradualSchedule(target=0.8, start_step=100, end_step=500, update_interval=100)
    expected = {
        0: 0.0,
        99: 0.0,
        150: 0.0,  # k = 100 = start: t = 0
        250: 0.8 * (1 - 0.75**3),  # k = 200: t = 0.25 -> 0.4625
        300: 0.8 * (1 - 0.5**3),  # t = 0.5 -> 0.7
        499: 0.8 * (1 - 0.25**3),  # k = 400: t = 0.75 -> 0.7875
        500: 0.8,
        10_000: 0.8,
    }
    for step, sparsity in expected.items():
        actual = schedule.sparsity_at(step)
        np.testing.assert_allclose(actual, sparsity, rtol=1e-6, err_msg=str(step))
    updates = [s for s in range(0, 1001, 50) if schedule.is_update_step(s)]
    assert updates == [100, 200, 300, 400, 500]


def test_gmp_end_off_the_interval_still_reaches_target() -> None:
    """The first update at or after end_step lands exactly on the target."""
    schedule = sp.GradualSchedule(target=0.5, start_step=0, end_step=250, update_interval=100)
    assert [s for s in range(0, 1000) if schedule.is_update_step(s)] == [0, 100, 200, 300]
    np.testing.assert_allclose(schedule.sparsity_at(299), 0.5 * (1 - 0.2**3), rtol=1e-6)
    assert float(schedule.sparsity_at(300)) == 0.5 and float(schedule.progress(300)) == 1.0


def test_oneshot_and_dense_schedules() -> None:
    oneshot = sp.OneShotSchedule(target=0.75, step=10)
    assert [float(oneshot.sparsity_at(s)) for s in (0, 9, 10, 11)] == [0.0, 0.0, 0.75, 0.75]
    assert [bool(oneshot.is_update_step(s)) for s in (9, 10, 11)] == [False, True, False]
    dense = sp.DenseSchedule()
    assert float(dense.sparsity_at(123)) == 0.0 and not dense.is_update_step(0)


def test_schedule_validation() -> None:
    with pytest.raises(ValueError, match="start_step < end_step"):
        sp.GradualSchedule(0.5, start_step=10, end_step=10, update_interval=1)
    with pytest.raises(ValueError, match="target sparsity"):
        sp.OneShotSchedule(1.0, step=0)


# --- masks -------------------------------------------------------------------------------------


def test_topk_mask_hand_made() -> None:
    scores = jnp.array([[0.5, 0.1, 0.9], [0.3, 0.7, 0.2]])
    np.testing.assert_array_equal(sp.topk_mask(scores, 3), [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(sp.topk_mask(scores, 0), np.zeros((2, 3), bool))
    np.testing.assert_array_equal(sp.topk_mask(scores, 6), np.ones((2, 3), bool))
    # All tied: the lowest flat indices win.
    tied = sp.topk_mask(jnp.zeros((3, 3)), 4)
    np.testing.assert_array_equal(tied.reshape(-1), [1, 1, 1, 1, 0, 0, 0, 0, 0])


def _reference_topk(scores: np.ndarray, keep: int) -> np.ndarray:
    """Stable sort by descending score: the same tie rule (lower flat index first)."""
    order = np.argsort(-scores.reshape(-1), kind="stable")
    mask = np.zeros(scores.size, bool)
    mask[order[:keep]] = True
    return mask.reshape(scores.shape)


@pytest.mark.parametrize("shape", [(7,), (16, 12), (5, 3, 4)])
def test_topk_mask_exact_counts_with_ties(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    topk = jax.jit(sp.topk_mask)
    size = int(np.prod(shape))
    tensors = {
        "normal": np.abs(rng.normal(size=shape)),
        "few values": rng.integers(0, 4, size=shape).astype(np.float64),  # many ties
        "tiny and zero": np.where(rng.random(shape) < 0.5, 0.0, 1e-40),  # denormals, zeros
        "with inf": np.where(rng.random(shape) < 0.3, np.inf, np.abs(rng.normal(size=shape))),
    }
    for name, scores in tensors.items():
        scores = scores.astype(np.float32)
        for keep in sorted({0, 1, size // 3, size // 2, size - 1, size}):
            mask = np.asarray(topk(scores, keep))
            assert mask.sum() == keep, (name, keep)
            reference = _reference_topk(scores, keep)
            np.testing.assert_array_equal(mask, reference, err_msg=f"{name} {keep}")


def test_keep_count_matches_sizing_rounding() -> None:
    assert sp.keep_count(10, 0.25) == 8  # round(7.5) -> 8 (half to even)
    assert sp.keep_count(6, 0.25) == 4  # round(4.5) -> 4
    assert sp.keep_count(768 * 3072, 0.875) == 768 * 3072 // 8


def test_algorithm1_hand_made() -> None:
    """1:2 groups along axis 0: the largest of each pair is protected (+inf), then top-k."""
    w = jnp.array(
        [
            [0.1, 0.9, 0.4, 0.0],
            [-0.5, 0.05, 0.4, 0.0],
            [0.3, -0.7, 0.4, 0.0],
            [0.2, 0.0, 0.4, -0.01],
        ]
    )
    scores = sp.nm_protected_scores(jnp.abs(w), sp.NM(1, 2))
    inf = np.inf
    expected = [
        [0.1, inf, inf, inf],
        [inf, 0.05, 0.4, 0.0],
        [inf, inf, inf, 0.0],
        [0.2, 0.0, 0.4, inf],
    ]
    np.testing.assert_array_equal(scores, np.float32(expected))  # tie in a group: first one wins
    # Keep 10 of 16: the 8 protected plus the two 0.4s (over 0.2, 0.1, 0.05).
    mask = sp.magnitude_mask(w, 10, sp.NM(1, 2))
    np.testing.assert_array_equal(
        mask.astype(int), [[0, 1, 1, 1], [1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 1, 1]]
    )
    # At the pattern's own sparsity every group keeps exactly n = 1.
    final = sp.magnitude_mask(w, 8, sp.NM(1, 2))
    np.testing.assert_array_equal(final.reshape(2, 2, 4).sum(axis=1), np.ones((2, 4)))


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (2, 8)])
def test_gradual_nm_keeps_at_least_n_per_group(n: int, m: int) -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(16, 6)).astype(np.float32)
    w[:4] = 0.5  # ties across and within groups
    pattern = sp.NM(n, m)
    for sparsity in np.linspace(0.0, pattern.sparsity, 5):
        keep = sp.keep_count(w.size, float(sparsity))
        mask = np.asarray(sp.magnitude_mask(jnp.asarray(w), keep, pattern))
        per_group = mask.reshape(16 // m, m, 6).sum(axis=1)
        assert mask.sum() == keep and (per_group >= n).all()
    assert (per_group == n).all()  # the last sparsity is 1 - n/m: exactly n everywhere


def test_nm_needs_m_to_divide_fan_in() -> None:
    params = {"attn": {"query": {"kernel": jnp.ones((6, 8))}}, "bias": jnp.ones(6)}
    sparsified = {"attn": {"query": {"kernel": True}}, "bias": False}
    with pytest.raises(ValueError, match=r"attn/query/kernel.*divisible by m.*\(6, 8\)"):
        sp.compute_masks(params, sparsified, 0.5, sp.NM(2, 4))
    schedule = sp.GradualSchedule(0.5, 0, 10, 1)
    tx = sp.masked_pruning(optax.sgd(0.1), sparsified, schedule, sp.NM(2, 4))
    with pytest.raises(ValueError, match="attn/query/kernel"):
        tx.init(params)
    with pytest.raises(ValueError, match="exceeds"):
        sp.masked_pruning(optax.sgd(0.1), sparsified, sp.OneShotSchedule(0.75, 0), sp.NM(2, 4))


def test_compute_and_apply_masks_on_restored_params() -> None:
    """One-shot pruning of given params: exact counts on the sparsified tensors only."""
    rng = np.random.default_rng(2)
    params = {
        "kernel": jnp.asarray(rng.normal(size=(8, 10))),
        "bias": jnp.asarray(rng.normal(size=10)),
    }
    sparsified = {"kernel": True, "bias": False}
    masks = sp.compute_masks(params, sparsified, 0.7)
    pruned = sp.apply_masks(params, masks)
    assert int(jnp.count_nonzero(pruned["kernel"])) == sp.keep_count(80, 0.7) == 24
    np.testing.assert_array_equal(pruned["bias"], params["bias"])
    kept = np.abs(np.asarray(params["kernel"]))[np.asarray(masks["kernel"])]
    dropped = np.abs(np.asarray(params["kernel"]))[~np.asarray(masks["kernel"])]
    assert kept.min() >= dropped.max()


# --- the masked optimizer ------------------------------------------------------------------------


def _toy_problem() -> tuple[dict, dict]:
    params = {
        "dense": {"kernel": jax.random.normal(jax.random.key(0), (16, 12))},
        "bias": jnp.zeros(12),
    }
    return params, {"dense": {"kernel": True}, "bias": False}


def _step_fn(tx: optax.GradientTransformation, traces: list[int]):
    @jax.jit
    def step(params: dict, state: optax.OptState, key: jax.Array) -> tuple[dict, optax.OptState]:
        traces.append(1)  # runs only while tracing
        grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


@pytest.mark.parametrize("pattern", [sp.Unstructured(), sp.NM(2, 4)])
@pytest.mark.parametrize("inner", ["adafactor", "adamw"])
def test_masked_steps_keep_pruned_weights_exactly_zero(pattern: sp.Pattern, inner: str) -> None:
    params, sparsified = _toy_problem()
    schedule = sp.GradualSchedule(target=0.5, start_step=2, end_step=8, update_interval=2)
    base = optim.adafactor(0.01) if inner == "adafactor" else optim.adamw(0.01)
    tx = sp.masked_pruning(base, sparsified, schedule, pattern)
    state = tx.init(params)
    traces: list[int] = []
    step = _step_fn(tx, traces)
    for i in range(12):
        params, state = step(params, state, jax.random.key(i))
        kernel = np.asarray(params["dense"]["kernel"])
        mask = np.asarray(state.masks["dense"]["kernel"])
        assert (kernel[~mask] == 0.0).all()  # exactly zero, not just small
        expected_keep = round((1 - float(schedule.sparsity_at(i))) * kernel.size)
        assert mask.sum() == expected_keep, i
    assert len(traces) == 1  # mask-update steps and plain steps share one trace
    assert np.count_nonzero(kernel) == 96  # half of 16 x 12, exactly
    assert int(state.count) == 12 and state.masks["bias"].shape == ()
    if isinstance(pattern, sp.NM):
        assert sp.nm_valid(kernel, pattern)
        assert ((kernel != 0).reshape(4, 4, 12).sum(axis=1) == 2).all()


def test_realised_sparsity_matches_sizing_on_a_model() -> None:
    """At the end of the schedule each tensor keeps round((1 - S) size) weights, so the total is
    engine.planning.sizing.nonzeros_at, even at a sparsity where float32 rounding could drift."""
    dims = ModelDims(
        "decoder", d_model=12, num_heads=2, head_dim=6, mlp_dim=20, layers=1,
        vocab_size=32, seq_len=8,
    )
    # Random values in the model's exact tree (eval_shape: no model compile needed).
    abstract = jax.eval_shape(lambda: models.init_params(dims, jax.random.key(0)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), abstract)
    sparsified = sp.sparsified_tree(params, dims)
    target = 0.3
    schedule = sp.GradualSchedule(target, 0, 3, 1)
    tx = sp.masked_pruning(optax.sgd(1e-3), sparsified, schedule, sp.Unstructured())
    state = tx.init(params)
    step = _step_fn(tx, [])
    for i in range(5):
        params, state = step(params, state, jax.random.key(i))
    rows = sp.sparsity_report(params, sparsified)
    sparse_rows = [r for r in rows if r.sparsified]
    assert {r.path for r in sparse_rows} == {
        "decoder/block_0/attn/query/kernel", "decoder/block_0/attn/key/kernel",
        "decoder/block_0/attn/value/kernel", "decoder/block_0/attn/out/kernel",
        "decoder/block_0/mlp/fc1/kernel", "decoder/block_0/mlp/fc2/kernel",
    }
    for row in sparse_rows:
        assert row.nonzeros == sp.keep_count(row.size, target), row.path
    assert sum(r.nonzeros for r in sparse_rows) == nonzeros_at(dims, target)


def test_sparsity_report_nm_validity() -> None:
    good = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 5.0]])  # 2:4 along axis 0
    bad = np.array([[1.0, 1.0], [1.0, 2.0], [3.0, 0.0], [4.0, 5.0]])
    params = {"a": good, "b": bad, "c": np.ones(3)}
    rows = sp.sparsity_report(params, {"a": True, "b": True, "c": False}, sp.NM(2, 4))
    assert [(r.path, r.nm_valid) for r in rows] == [("a", True), ("b", False), ("c", None)]
    assert rows[0].sparsity == 0.5 and rows[1].sparsity == 0.125 and rows[2].sparsity == 0.0


@pytest.mark.slow
def test_bisection_mask_keeps_the_largest_on_a_large_kernel() -> None:
    """DESIGN section 7: a threshold by bisection instead of sorting the whole 768x3072 kernel
    keeps exactly `keep` weights, none smaller than any it drops (its speed is a benchmark matter,
    not a test's)."""
    weights = jax.random.normal(jax.random.key(0), (768, 3072))
    keep = sp.keep_count(weights.size, 0.5)
    mask = np.asarray(jax.jit(lambda w: sp.magnitude_mask(w, keep, sp.Unstructured()))(weights))
    magnitude = np.abs(np.asarray(weights))
    assert int(mask.sum()) == keep
    assert magnitude[mask].min() >= magnitude[~mask].max()


def test_dense_schedule_keeps_everything() -> None:
    params, sparsified = _toy_problem()
    tx = sp.masked_pruning(optim.adamw(0.01), sparsified, sp.DenseSchedule(), sp.Unstructured())
    state = tx.init(params)
    step = _step_fn(tx, [])
    for i in range(3):
        params, state = step(params, state, jax.random.key(i))
    assert state.masks is None  # a dense run carries no masks at all
    assert np.count_nonzero(params["dense"]["kernel"]) == 16 * 12


def test_schedules_traced_equal_eager_with_python_final_counts() -> None:
    """Traced targets keep the exact final counts: at 0.9, a 5-weight tensor keeps
    round(0.49999999999999994) = 0 weights in float64 (engine.planning.sizing's count), but the float32
    product of a traced 0.9 is 0.50000012 and rounds to 1."""
    params = {"w": jnp.ones((5,)), "b": jnp.ones((3,))}
    sparsified = {"w": True, "b": False}
    schedule = sp.GradualSchedule(target=0.9, start_step=0, end_step=4, update_interval=2)
    counted = with_final_keep(schedule, params, sparsified)
    assert counted.final_keep == {5: sp.keep_count(5, 0.9)} == {5: 0}
    assert int(jnp.round((1 - jnp.float32(0.9)) * 5)) == 1  # what a float32 count would keep
    steps = jnp.arange(12, dtype=jnp.int32)
    for method in ("sparsity_at", "is_update_step", "progress"):
        traced = jax.jit(lambda s, k, m=method: jax.vmap(getattr(s, m))(k))(counted, steps)
        np.testing.assert_array_equal(traced, [getattr(counted, method)(k) for k in steps])
    keep = jax.jit(lambda s: _scheduled_keep(5, s, jnp.int32(8)))(counted)
    assert int(keep) == sp.keep_count(5, 0.9)
