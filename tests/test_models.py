"""The models honour the sizing contract, and forward + loss work for every family."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from engine import models
from engine.models.t5 import relative_position_bucket, shift_right
from engine.planning.sizing import ModelDims, param_shapes, scaled_dims, total_params

TINY = {
    "vit": ModelDims(
        "vit", d_model=16, num_heads=2, head_dim=8, mlp_dim=32, layers=2,
        image_size=8, patch_size=4, channels=3, num_classes=10,
    ),
    "t5": ModelDims(
        "t5", d_model=16, num_heads=2, head_dim=8, mlp_dim=32, layers=2, decoder_layers=2,
        vocab_size=64, seq_len=12, target_len=6, relative_buckets=8,
    ),
    "decoder": ModelDims(
        "decoder", d_model=16, num_heads=2, head_dim=8, mlp_dim=32, layers=2,
        vocab_size=64, seq_len=12,
    ),
}
FAMILIES = sorted(TINY)
# One block per stack keeps compile time (which dominates these tests) low.
SHALLOW = {
    family: replace(dims, layers=1, decoder_layers=min(dims.decoder_layers, 1))
    for family, dims in TINY.items()
}


@functools.cache
def _compiled(family: str) -> tuple[ModelDims, dict, Callable, Callable]:
    """Params and jitted (loss, grads, metrics) and apply of the shallow model, built once."""
    dims = SHALLOW[family]

    def evaluate(params: dict, batch: dict) -> tuple:
        loss, grads = jax.value_and_grad(models.loss_fn(dims))(params, batch)
        return loss, grads, models.metrics_fn(dims)(params, batch)

    params = models.init_params(dims, jax.random.key(0))
    return dims, params, jax.jit(evaluate), jax.jit(models.build_model(dims).apply)


def _shapes(dims: ModelDims) -> dict[str, tuple[int, ...]]:
    abstract = jax.eval_shape(lambda rng: models.init_params(dims, rng), jax.random.key(0))
    return {k: v.shape for k, v in traverse_util.flatten_dict(abstract, sep="/").items()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("d_model", [16, 24])
def test_param_tree_matches_sizing_contract(family: str, d_model: int) -> None:
    dims = scaled_dims(TINY[family], d_model, mlp_ratio=2.0)
    assert _shapes(dims) == param_shapes(dims)


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_and_loss_finite(family: str) -> None:
    assert total_params(TINY[family]) < 20_000  # tiny: a few thousand weights
    dims, params, evaluate, _ = _compiled(family)
    loss, grads, metrics = evaluate(params, _random_batch(dims, batch_size=3, seed=1))
    assert loss.shape == () and np.isfinite(float(loss))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert metrics["loss_sum"].shape == metrics["weight"].shape == (3,)
    np.testing.assert_allclose(metrics["loss_sum"].sum() / metrics["weight"].sum(), loss, rtol=1e-6)


def _random_batch(dims: ModelDims, batch_size: int, seed: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    if dims.family == "vit":
        images = rng.normal(size=(batch_size, dims.image_size, dims.image_size, dims.channels))
        labels = rng.integers(0, 2, size=(batch_size, dims.num_classes))
        return {"images": images.astype(np.float32), "labels": labels.astype(np.float32)}
    if dims.family == "t5":
        inputs = rng.integers(2, dims.vocab_size, size=(batch_size, dims.seq_len))
        targets = rng.integers(2, dims.vocab_size, size=(batch_size, dims.target_len))
        inputs[:, -3:], targets[:, -2:] = 0, 0  # padding at the end
        return {"inputs": inputs.astype(np.int32), "targets": targets.astype(np.int32)}
    tokens = rng.integers(0, dims.vocab_size, size=(batch_size, dims.seq_len + 1))
    return {"tokens": tokens.astype(np.int32)}


def test_vit_initial_loss_is_classes_times_log2() -> None:
    """Zero-initialised head: every class starts at probability 1/2, and the loss sums classes."""
    dims, params, evaluate, _ = _compiled("vit")
    loss = evaluate(params, _random_batch(dims, 3, seed=0))[0]
    np.testing.assert_allclose(loss, dims.num_classes * np.log(2.0), rtol=1e-6)


def test_vit_loss_sums_classes_and_averages_examples_like_big_vision() -> None:
    """The paper's loss (big_vision's sigmoid_xent): per-class sigmoid BCE, summed over classes,
    averaged over examples. The evaluation's definition (sum of loss_sum / sum of weight over
    batches, engine.training.loop.evaluate) gives the same number on the same batch."""
    from engine.training.loop import evaluate as evaluate_batches

    dims, params, _, apply = _compiled("vit")
    batch = _random_batch(dims, 5, seed=3)
    # A non-zero head, so the logits differ per class and example.
    head = jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape)
    params = {**params, "head": {**params["head"], "kernel": head}}
    logits = np.asarray(apply({"params": params}, batch["images"]), np.float64)
    labels = np.asarray(batch["labels"], np.float64)
    p = 1.0 / (1.0 + np.exp(-logits))
    per_class = -(labels * np.log(p) + (1.0 - labels) * np.log1p(-p))  # [examples, classes]
    expected = per_class.mean(axis=0).sum()  # per-class BCE averaged over examples, summed
    train_loss = float(jax.jit(models.loss_fn(dims))(params, batch))
    np.testing.assert_allclose(train_loss, expected, rtol=1e-5)
    assert train_loss > 1.5 * per_class.mean()  # not the mean over classes (10 classes here)
    eval_loss = evaluate_batches(jax.jit(models.metrics_fn(dims)), params, [batch])
    np.testing.assert_allclose(eval_loss, train_loss, rtol=1e-6)
    # Split into uneven batches, the evaluation still averages over examples.
    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    np.testing.assert_allclose(evaluate_batches(jax.jit(models.metrics_fn(dims)), params, halves),
                               train_loss, rtol=1e-5)


def test_t5_loss_ignores_padding_targets() -> None:
    dims, params, evaluate, _ = _compiled("t5")
    batch = _random_batch(dims, 3, seed=0)
    loss, _, metrics = evaluate(params, batch)
    np.testing.assert_array_equal(metrics["weight"], [dims.target_len - 2] * 3)
    scored_tokens = 3 * (dims.target_len - 2)
    np.testing.assert_allclose(loss, metrics["loss_sum"].sum() / scored_tokens, rtol=1e-6)
    # Unpadding the targets makes them count.
    unpadded = dict(batch, targets=batch["targets"].copy())
    unpadded["targets"][:, -2:] = 5
    np.testing.assert_array_equal(evaluate(params, unpadded)[2]["weight"], [dims.target_len] * 3)


def test_t5_shift_right_starts_with_pad() -> None:
    targets = jnp.array([[5, 6, 1, 0]])
    np.testing.assert_array_equal(shift_right(targets), [[0, 5, 6, 1]])


def test_relative_position_buckets() -> None:
    """T5 bucketing: exact small offsets, each direction its own half when bidirectional."""
    relative = np.arange(-3, 4)
    np.testing.assert_array_equal(
        relative_position_bucket(relative, bidirectional=True, num_buckets=32, max_distance=128),
        [3, 2, 1, 0, 17, 18, 19],
    )
    # Causal: future keys (positive offsets) all fall in bucket 0, past ones count back.
    np.testing.assert_array_equal(
        relative_position_bucket(relative, bidirectional=False, num_buckets=32, max_distance=128),
        [3, 2, 1, 0, 0, 0, 0],
    )
    far = relative_position_bucket(np.array([-1000]), False, num_buckets=32, max_distance=128)
    assert far[0] == 31


@pytest.mark.parametrize("family", ["decoder", "t5"])
def test_causal_decoding(family: str) -> None:
    """Decoder logits at position i do not depend on tokens after i."""
    dims, params, _, apply = _compiled(family)
    params = {"params": params}
    batch = _random_batch(dims, 1, seed=3)
    if family == "decoder":
        tokens = jnp.asarray(batch["tokens"][:, :-1])
        logits = apply(params, tokens)
        logits_changed = apply(params, tokens.at[:, -1].set(7))
    else:
        inputs, dec = jnp.asarray(batch["inputs"]), shift_right(jnp.asarray(batch["targets"]))
        logits = apply(params, inputs, dec)
        logits_changed = apply(params, inputs, dec.at[:, -1].set(7))
    np.testing.assert_allclose(logits[:, :-1], logits_changed[:, :-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits[:, -1], logits_changed[:, -1])
