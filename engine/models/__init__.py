"""The three model families behind one interface: build, init, loss, metrics, dummy batch.

Every family produces exactly the parameter tree engine.planning.sizing.param_shapes(dims) describes
(under the 'params' collection; tests/test_models.py checks it). Batches are dicts of arrays:

  vit      {"images": f32 [B, image_size, image_size, channels], "labels": f32 [B, num_classes]}
  t5       {"inputs": i32 [B, seq_len], "targets": i32 [B, target_len]}  (pad 0, EOS 1)
  decoder  {"tokens": i32 [B, seq_len + 1]}  (inputs tokens[:, :-1], targets tokens[:, 1:])

Losses are weighted means: the training loss is sum(loss_sum) / sum(weight) over the batch, where
the weight is 1 per image (vit, loss summed over classes) or the number of scored tokens (t5:
non-pad targets; decoder: every position). `metrics_fn` returns those per-example sums so that an
evaluation over many batches aggregates to exactly the same definition.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from engine.models import decoder, t5, vit
from engine.planning.sizing import ModelDims

Array = jax.Array
Params = Any  # the nested dict of the 'params' collection
Batch = dict[str, Array]

_MODULES: dict[str, Callable[[ModelDims], nn.Module]] = {
    "vit": lambda dims: vit.ViT(dims),
    "t5": lambda dims: t5.T5(dims),
    "decoder": lambda dims: decoder.DecoderLM(dims),
}
_DUMMY_BATCHES = {"vit": vit.dummy_batch, "t5": t5.dummy_batch, "decoder": decoder.dummy_batch}


def build_model(dims: ModelDims) -> nn.Module:
    return _MODULES[dims.family](dims)


def dummy_batch(dims: ModelDims, batch_size: int) -> Batch:
    """A batch of the right shapes and dtypes (zeros or ones), for tracing and tests."""
    return _DUMMY_BATCHES[dims.family](dims, batch_size)


def _model_inputs(dims: ModelDims, batch: Batch) -> tuple[Array, ...]:
    if dims.family == "vit":
        return (batch["images"],)
    if dims.family == "t5":
        return batch["inputs"], t5.shift_right(batch["targets"])
    return (batch["tokens"][:, :-1],)


def init_params(dims: ModelDims, rng: Array) -> Params:
    """Fresh parameters (the 'params' collection) for this shape."""
    inputs = _model_inputs(dims, dummy_batch(dims, batch_size=1))
    # One compiled init instead of op-by-op dispatch: much faster for deep models on CPU.
    return jax.jit(build_model(dims).init)(rng, *inputs)["params"]


@functools.cache
def abstract_params(dims: ModelDims) -> Params:
    """Shapes and dtypes of `init_params`' tree, traced once per shape (a sweep's runs of one
    shape would otherwise trace the model's init ~60 ms each). Read-only: it is shared."""
    return jax.eval_shape(lambda: init_params(dims, jax.random.key(0)))


# Cached: one function per shape, so the runs of a sweep share compiled programs (engine.training.loop).
@functools.cache
def metrics_fn(dims: ModelDims) -> Callable[[Params, Batch], dict[str, Array]]:
    """(params, batch) -> {"loss_sum": [B], "weight": [B]}: per-example summed loss and weight."""
    model = build_model(dims)

    def per_example(params: Params, batch: Batch) -> dict[str, Array]:
        # flax types apply() as possibly (output, variables): that is only with mutable=
        logits: Array = model.apply({"params": params}, *_model_inputs(dims, batch))  # type: ignore[assignment]
        if dims.family == "vit":
            loss = vit.per_example_loss(logits, batch["labels"])
            return {"loss_sum": loss, "weight": jnp.ones_like(loss)}
        if dims.family == "t5":
            loss_sum, weight = t5.per_example_loss_sum(logits, batch["targets"])
        else:
            loss_sum, weight = decoder.per_example_loss_sum(logits, batch["tokens"][:, 1:])
        return {"loss_sum": loss_sum, "weight": weight}

    return per_example


@functools.cache
def loss_fn(dims: ModelDims) -> Callable[[Params, Batch], Array]:
    """(params, batch) -> scalar training loss (the weighted mean described above)."""
    per_example = metrics_fn(dims)

    def loss(params: Params, batch: Batch) -> Array:
        metrics = per_example(params, batch)
        return metrics["loss_sum"].sum() / jnp.maximum(metrics["weight"].sum(), 1.0)

    return loss
