"""GPT-style causal language model, in the style of nanodo.

Token + learned position embedding, pre-LN blocks, final LN, untied LM head; next-token loss.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from engine.models.layers import Attention, Mlp, causal_mask
from engine.planning.sizing import ModelDims

Array = jax.Array


class DecoderBlock(nn.Module):
    dims: ModelDims

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> Array:
        d = self.dims
        y = nn.LayerNorm(name="ln_attn")(x)
        x = x + Attention(d.num_heads, d.head_dim, use_bias=True, name="attn")(y, y, mask)
        return x + Mlp(d.mlp_dim, name="mlp")(nn.LayerNorm(name="ln_mlp")(x))


class Stack(nn.Module):
    dims: ModelDims

    @nn.compact
    def __call__(self, x: Array) -> Array:
        mask = causal_mask(x.shape[1])
        for i in range(self.dims.layers):
            x = DecoderBlock(self.dims, name=f"block_{i}")(x, mask)
        return nn.LayerNorm(name="ln_final")(x)


class DecoderLM(nn.Module):
    dims: ModelDims

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        """tokens [B, T <= seq_len] int32 -> next-token logits [B, T, vocab_size]."""
        d = self.dims
        init = nn.initializers.normal(stddev=0.02)  # GPT-2's embedding init
        x = nn.Embed(d.vocab_size, d.d_model, embedding_init=init, name="token_embed")(tokens)
        pos = self.param("pos_embed", init, (1, d.seq_len, d.d_model))
        x = Stack(d, name="decoder")(x + pos[:, : tokens.shape[1]])
        return nn.Dense(d.vocab_size, use_bias=False, name="lm_head")(x)


def per_example_loss_sum(logits: Array, targets: Array) -> tuple[Array, Array]:
    """Summed next-token cross-entropy of each sequence and its token count: ([B], [B])."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return losses.sum(axis=-1), jnp.full(losses.shape[:1], losses.shape[1], jnp.float32)


def dummy_batch(dims: ModelDims, batch_size: int) -> dict[str, Array]:
    return {"tokens": jnp.zeros((batch_size, dims.seq_len + 1), jnp.int32)}
