"""Building blocks shared by the model families, named as engine/planning/sizing.py lays them out.

Every sparsified weight is a 2-D Dense kernel (fan_in, fan_out): attention projections are plain
Dense layers whose outputs are split into heads afterwards (not DenseGeneral with 3-D kernels), so
masks, n:m groups (along fan_in) and the sparsity-aware optimizer all see one matrix per layer.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# Additive logit for masked-out keys: large but finite, so a fully masked row gives a uniform
# softmax instead of NaN.
_MASKED_LOGIT = -1e9


class Attention(nn.Module):
    """Multi-head attention with 2-D query/key/value/out kernels (sizing._attention)."""

    num_heads: int
    head_dim: int
    use_bias: bool

    @nn.compact
    def __call__(
        self,
        x_q: Array,
        x_kv: Array,
        mask: Array | None = None,
        bias: Array | None = None,
    ) -> Array:
        """x_q [B, Tq, d], x_kv [B, Tk, d]; mask broadcastable to [B, H, Tq, Tk] (True = attend);
        bias an additive logit term broadcastable to the same shape (T5 relative positions)."""
        d_model = x_q.shape[-1]
        attn_dim = self.num_heads * self.head_dim

        def heads(x: Array, name: str) -> Array:
            y = nn.Dense(attn_dim, use_bias=self.use_bias, name=name)(x)
            return y.reshape(*y.shape[:-1], self.num_heads, self.head_dim)

        q, k, v = heads(x_q, "query"), heads(x_kv, "key"), heads(x_kv, "value")
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim)
        if bias is not None:
            logits = logits + bias
        if mask is not None:
            logits = jnp.where(mask, logits, _MASKED_LOGIT)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*x_q.shape[:-1], attn_dim)
        return nn.Dense(d_model, use_bias=self.use_bias, name="out")(out)


class Mlp(nn.Module):
    """GELU MLP with biases (ViT, decoder): fc1 -> gelu -> fc2."""

    mlp_dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = nn.gelu(nn.Dense(self.mlp_dim, name="fc1")(x))
        return nn.Dense(x.shape[-1], name="fc2")(h)


class GatedMlp(nn.Module):
    """T5 v1.1 gated-GELU MLP without biases: wo(gelu(wi_0 x) * wi_1 x)."""

    mlp_dim: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        gate = nn.gelu(nn.Dense(self.mlp_dim, use_bias=False, name="wi_0")(x))
        linear = nn.Dense(self.mlp_dim, use_bias=False, name="wi_1")(x)
        return nn.Dense(x.shape[-1], use_bias=False, name="wo")(gate * linear)


def causal_mask(length: int) -> Array:
    """[1, 1, T, T] lower-triangular attention mask (True = may attend)."""
    return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
