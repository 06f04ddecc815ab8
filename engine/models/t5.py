"""T5 v1.1-style encoder-decoder for span corruption (Raffel et al. 2020; the v1.1 changes).

RMSNorm (scale only), no biases anywhere, gated-GELU MLP, bucketed relative position bias (one
table per stack shared by its layers: bidirectional in the encoder, causal in the decoder), one
token embedding shared by encoder and decoder inputs, untied LM head. No dropout: runs are
deterministic functions of (params, batch). One deviation, shared with the other families:
attention logits are scaled by 1/sqrt(head_dim) (T5 instead folds that factor into the query
initialisation); the parameter tree is the same either way.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from engine.models.layers import Attention, GatedMlp, causal_mask
from engine.planning.sizing import ModelDims

Array = jax.Array

PAD_ID = 0  # also the decoder's start token, as in T5
MAX_DISTANCE = 128  # T5's relative position cutoff: farther offsets share the last bucket


def relative_position_bucket(
    relative_position: np.ndarray, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """T5's bucketing of key_position - query_position: half the buckets exact, half
    log-spaced up to max_distance; in the bidirectional case each direction gets half."""
    bucket = np.zeros_like(relative_position)
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        bucket += (n < 0).astype(np.int32) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    log_ratio = np.log(np.maximum(n, 1) / max_exact) / np.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(np.int32)
    large = np.minimum(large, num_buckets - 1)
    return bucket + np.where(n < max_exact, n, large)


def relative_bias(table: nn.Embed, length: int, bidirectional: bool, dims: ModelDims) -> Array:
    """Additive self-attention logits [1, H, T, T] looked up in a (buckets, heads) table."""
    relative = np.arange(length)[None, :] - np.arange(length)[:, None]
    buckets = relative_position_bucket(relative, bidirectional, dims.relative_buckets, MAX_DISTANCE)
    return table(jnp.asarray(buckets)).transpose(2, 0, 1)[None]


def _bias_table(dims: ModelDims) -> nn.Embed:
    return nn.Embed(dims.relative_buckets, dims.num_heads, name="relative_bias")


class EncoderBlock(nn.Module):
    dims: ModelDims

    @nn.compact
    def __call__(self, x: Array, mask: Array, bias: Array) -> Array:
        d = self.dims
        y = nn.RMSNorm(name="ln_attn")(x)
        x = x + Attention(d.num_heads, d.head_dim, use_bias=False, name="attn")(y, y, mask, bias)
        return x + GatedMlp(d.mlp_dim, name="mlp")(nn.RMSNorm(name="ln_mlp")(x))


class DecoderBlock(nn.Module):
    dims: ModelDims

    @nn.compact
    def __call__(
        self, x: Array, encoded: Array, self_mask: Array, bias: Array, cross_mask: Array
    ) -> Array:
        d = self.dims
        y = nn.RMSNorm(name="ln_self_attn")(x)
        attn = Attention(d.num_heads, d.head_dim, use_bias=False, name="self_attn")
        x = x + attn(y, y, self_mask, bias)
        y = nn.RMSNorm(name="ln_cross_attn")(x)
        cross = Attention(d.num_heads, d.head_dim, use_bias=False, name="cross_attn")
        x = x + cross(y, encoded, cross_mask)
        return x + GatedMlp(d.mlp_dim, name="mlp")(nn.RMSNorm(name="ln_mlp")(x))


class Encoder(nn.Module):
    dims: ModelDims

    @nn.compact
    def __call__(self, x: Array, key_mask: Array) -> Array:
        length = x.shape[1]
        bias = relative_bias(_bias_table(self.dims), length, bidirectional=True, dims=self.dims)
        mask = key_mask[:, None, None, :]
        for i in range(self.dims.layers):
            x = EncoderBlock(self.dims, name=f"block_{i}")(x, mask, bias)
        return nn.RMSNorm(name="ln_final")(x)


class Decoder(nn.Module):
    dims: ModelDims

    @nn.compact
    def __call__(self, x: Array, encoded: Array, encoder_key_mask: Array) -> Array:
        length = x.shape[1]
        bias = relative_bias(_bias_table(self.dims), length, bidirectional=False, dims=self.dims)
        self_mask = causal_mask(length)
        cross_mask = encoder_key_mask[:, None, None, :]
        for i in range(self.dims.decoder_layers):
            block = DecoderBlock(self.dims, name=f"block_{i}")
            x = block(x, encoded, self_mask, bias, cross_mask)
        return nn.RMSNorm(name="ln_final")(x)


class T5(nn.Module):
    dims: ModelDims

    @nn.compact
    def __call__(self, inputs: Array, decoder_inputs: Array) -> Array:
        """inputs [B, seq_len], decoder_inputs [B, target_len] (int32) -> logits [B, target_len,
        vocab_size]."""
        d = self.dims
        # One embedding for encoder and decoder inputs; std 1 as in T5 (no sqrt(d) rescaling).
        init = nn.initializers.normal(stddev=1.0)
        embed = nn.Embed(d.vocab_size, d.d_model, embedding_init=init, name="token_embed")
        key_mask = inputs != PAD_ID
        encoded = Encoder(d, name="encoder")(embed(inputs), key_mask)
        decoded = Decoder(d, name="decoder")(embed(decoder_inputs), encoded, key_mask)
        return nn.Dense(d.vocab_size, use_bias=False, name="lm_head")(decoded)


def shift_right(targets: Array) -> Array:
    """Decoder inputs: targets shifted one step right, PAD_ID (0) as the start token."""
    return jnp.pad(targets, ((0, 0), (1, 0)), constant_values=PAD_ID)[:, :-1]


def per_example_loss_sum(logits: Array, targets: Array) -> tuple[Array, Array]:
    """Summed token cross-entropy over non-pad targets, and their count: ([B], [B])."""
    weights = (targets != PAD_ID).astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return (losses * weights).sum(axis=-1), weights.sum(axis=-1)


def dummy_batch(dims: ModelDims, batch_size: int) -> dict[str, Array]:
    return {
        "inputs": jnp.ones((batch_size, dims.seq_len), jnp.int32),
        "targets": jnp.ones((batch_size, dims.target_len), jnp.int32),
    }
