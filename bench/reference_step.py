"""The yardstick for the engine's train step: a minimal hand-written flax + optax ViT step.

Written from scratch, the way one would without the engine: one flax module, a sigmoid
cross-entropy loss, stock optax transforms for the ViT-style Adafactor of experiments/vit_sweep.yaml
(global-norm clipping, unfactored second moment with capped decay, momentum, learning-rate
schedule), and `jax.jit` with the state donated. Parameter names match the engine's ViT so both
steps start from the very same parameters, and the benchmark checks they compute the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Array = jax.Array


class SelfAttention(nn.Module):
    heads: int
    head_dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        width = self.heads * self.head_dim
        split = lambda y: y.reshape(*y.shape[:-1], self.heads, self.head_dim)  # noqa: E731
        q = split(nn.Dense(width, name="query")(x))
        k = split(nn.Dense(width, name="key")(x))
        v = split(nn.Dense(width, name="value")(x))
        weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim))
        mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*x.shape[:-1], width)
        return nn.Dense(x.shape[-1], name="out")(mixed)


class Block(nn.Module):
    heads: int
    head_dim: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = x + SelfAttention(self.heads, self.head_dim, name="attn")(nn.LayerNorm(name="ln_attn")(x))
        y = nn.LayerNorm(name="ln_mlp")(x)
        y = nn.Dense(x.shape[-1], name="fc2")(nn.gelu(nn.Dense(self.mlp_dim, name="fc1")(y)))
        return x + y


class HandWrittenViT(nn.Module):
    width: int
    depth: int
    heads: int
    head_dim: int
    mlp_dim: int
    patch: int
    patches: int
    classes: int

    @nn.compact
    def __call__(self, images: Array) -> Array:
        x = nn.Conv(self.width, (self.patch, self.patch), strides=(self.patch, self.patch),
                    padding="VALID", name="patch_embed")(images)
        x = x.reshape(x.shape[0], -1, self.width)
        x = x + self.param("pos_embed", nn.initializers.normal(0.02), (1, self.patches, self.width))
        for i in range(self.depth):
            x = Block(self.heads, self.head_dim, self.mlp_dim, name=f"block_{i}")(x)
        x = nn.LayerNorm(name="ln_final")(x)
        return nn.Dense(self.classes, name="head")(x.mean(axis=1))


def vit_from_dims(dims: Any) -> HandWrittenViT:
    return HandWrittenViT(dims.d_model, dims.layers, dims.num_heads, dims.head_dim, dims.mlp_dim,
                          dims.patch_size, dims.num_patches, dims.num_classes)


def engine_params_to_hand_written(params: dict) -> dict:
    """The engine nests blocks under encoder/ with an mlp/ scope; the hand-written model does not."""
    converted = {key: value for key, value in params.items() if key != "encoder"}
    for name, block in params["encoder"].items():
        if name == "ln_final":
            converted["ln_final"] = block
            continue
        converted[name] = {"ln_attn": block["ln_attn"], "attn": block["attn"],
                           "ln_mlp": block["ln_mlp"], **block["mlp"]}
    return converted


def vit_adafactor(
    peak: float, warmup: int, total: int, cooldown: int, clip_norm: float, decay_rate: float,
    beta2_cap: float, momentum: float, eps: float,
) -> optax.GradientTransformation:
    """Stock optax: the update rule experiments/vit_sweep.yaml describes (Zhai et al.'s Adafactor
    with an unfactored second moment, no relative step, no RMS clipping)."""
    def beta2(step: Array, exponent: float) -> Array:
        return jnp.minimum(1.0 - (step.astype(jnp.float32) + 1.0) ** -exponent, beta2_cap)

    constant = total - warmup - cooldown
    rate = optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak),
         optax.linear_schedule(peak, 0.0, cooldown)],
        [warmup, warmup + constant],
    )
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.scale_by_factored_rms(factored=False, decay_rate=decay_rate, epsilon=eps,
                                    decay_rate_fn=beta2),
        optax.ema(momentum, debias=False),
        optax.scale_by_learning_rate(rate),
    )


def make_step(
    model: nn.Module, optimizer: optax.GradientTransformation, donate: bool = True
) -> Callable[[tuple, dict], tuple[tuple, Array]]:
    """jit((params, opt_state), batch) -> ((params, opt_state), loss), state donated (or not)."""

    def loss_fn(params: dict, batch: dict) -> Array:
        logits = model.apply({"params": params}, batch["images"])
        return optax.sigmoid_binary_cross_entropy(logits, batch["labels"]).mean()

    def step(state: tuple, batch: dict) -> tuple[tuple, Array]:
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return jax.jit(step, donate_argnums=0 if donate else ())
