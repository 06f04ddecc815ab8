"""Vision Transformer for multi-label classification (JFT setup), in the style of big_vision.

Conv patch embedding, learned position embedding, pre-LN encoder, final LN, global average pool,
linear head; sigmoid cross-entropy summed over classes and averaged over examples, as big_vision's
`sigmoid_xent` does (the paper's loss, so its Huber delta of 0.01 on L means the same here).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from engine.models.layers import Attention, Mlp
from engine.planning.sizing import ModelDims

Array = jax.Array


class EncoderBlock(nn.Module):
    dims: ModelDims

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = self.dims
        y = nn.LayerNorm(name="ln_attn")(x)
        x = x + Attention(d.num_heads, d.head_dim, use_bias=True, name="attn")(y, y)
        y = nn.LayerNorm(name="ln_mlp")(x)
        return x + Mlp(d.mlp_dim, name="mlp")(y)


class Encoder(nn.Module):
    dims: ModelDims

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for i in range(self.dims.layers):
            x = EncoderBlock(self.dims, name=f"block_{i}")(x)
        return nn.LayerNorm(name="ln_final")(x)


class ViT(nn.Module):
    dims: ModelDims

    @nn.compact
    def __call__(self, images: Array) -> Array:
        """images [B, H, W, C] float32 -> logits [B, num_classes]."""
        d = self.dims
        p = d.patch_size
        x = nn.Conv(d.d_model, (p, p), strides=(p, p), padding="VALID", name="patch_embed")(images)
        x = x.reshape(x.shape[0], -1, d.d_model)
        pos_init = nn.initializers.normal(stddev=d.d_model**-0.5)  # big_vision's learned posemb
        x = x + self.param("pos_embed", pos_init, (1, d.num_patches, d.d_model))
        x = Encoder(d, name="encoder")(x)
        # Zero-initialised head, as big_vision does for classification from scratch.
        head = nn.Dense(d.num_classes, kernel_init=nn.initializers.zeros, name="head")
        return head(x.mean(axis=1))


def per_example_loss(logits: Array, labels: Array) -> Array:
    """Sigmoid cross-entropy of each example, summed over its classes: [B] (big_vision's
    sigmoid_xent before its mean over examples)."""
    return optax.sigmoid_binary_cross_entropy(logits, labels).sum(axis=-1)


def dummy_batch(dims: ModelDims, batch_size: int) -> dict[str, Array]:
    shape = (batch_size, dims.image_size, dims.image_size, dims.channels)
    return {
        "images": jnp.zeros(shape, jnp.float32),
        "labels": jnp.zeros((batch_size, dims.num_classes), jnp.float32),
    }
