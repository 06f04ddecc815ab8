"""Exact parameter shapes of every model family, as a function of d_model.

This is the architecture contract shared by planning (sizes, FLOPs, d_model choice) and by the
flax models in engine/models/: each model's `init` must produce exactly the parameter tree that
`param_shapes` describes (tests/test_models.py checks this with jax.eval_shape). Pure Python, so
`engine plan` stays fast and needs no tracing.

The paper scales only the hidden width (appendix A): d_model changes, the MLP width follows it
(mlp_dim = round(mlp_ratio * d_model)), depth and head count stay fixed, and the per-head width
follows d_model (head_dim = round(d_model / num_heads)) so the attention projections stay close
to d_model x d_model. Every sparsified weight is a 2-D kernel laid out (fan_in, fan_out); n:m
groups run along fan_in (axis 0), the reduction axis of the matmul.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from spec.model import MAX_D_MODEL

Family = Literal["vit", "t5", "decoder"]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class ModelDims:
    """The concrete shape of one model: a base shape with d_model filled in."""

    family: Family
    d_model: int
    num_heads: int
    head_dim: int
    mlp_dim: int
    layers: int  # vit and decoder: blocks; t5: encoder blocks
    decoder_layers: int = 0  # t5 only
    # vit
    image_size: int = 0
    patch_size: int = 0
    channels: int = 0
    num_classes: int = 0
    # t5 and decoder
    vocab_size: int = 0
    seq_len: int = 0  # decoder context; t5 encoder input length
    target_len: int = 0  # t5 decoder length
    relative_buckets: int = 32  # t5 relative position buckets
    sparsify_embeddings: bool = False  # t5: also prune the token embedding and LM head

    @property
    def attn_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def scaled_dims(base: ModelDims, d_model: int, mlp_ratio: float) -> ModelDims:
    """The base shape at another width: MLP and head width follow d_model, depth and heads stay."""
    return replace(
        base,
        d_model=d_model,
        head_dim=max(1, round(d_model / base.num_heads)),
        mlp_dim=max(1, round(mlp_ratio * d_model)),
    )


def _attention(prefix: str, dims: ModelDims, bias: bool) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {
        f"{prefix}/query/kernel": (dims.d_model, dims.attn_dim),
        f"{prefix}/key/kernel": (dims.d_model, dims.attn_dim),
        f"{prefix}/value/kernel": (dims.d_model, dims.attn_dim),
        f"{prefix}/out/kernel": (dims.attn_dim, dims.d_model),
    }
    if bias:
        shapes |= {
            f"{prefix}/query/bias": (dims.attn_dim,),
            f"{prefix}/key/bias": (dims.attn_dim,),
            f"{prefix}/value/bias": (dims.attn_dim,),
            f"{prefix}/out/bias": (dims.d_model,),
        }
    return shapes


def _layer_norm(prefix: str, dims: ModelDims) -> dict[str, Shape]:
    return {f"{prefix}/scale": (dims.d_model,), f"{prefix}/bias": (dims.d_model,)}


def _mlp(prefix: str, dims: ModelDims) -> dict[str, Shape]:
    """GELU MLP with biases (ViT, decoder)."""
    return {
        f"{prefix}/fc1/kernel": (dims.d_model, dims.mlp_dim),
        f"{prefix}/fc1/bias": (dims.mlp_dim,),
        f"{prefix}/fc2/kernel": (dims.mlp_dim, dims.d_model),
        f"{prefix}/fc2/bias": (dims.d_model,),
    }


def _vit_shapes(dims: ModelDims) -> dict[str, Shape]:
    p = dims.patch_size
    shapes: dict[str, Shape] = {
        "patch_embed/kernel": (p, p, dims.channels, dims.d_model),
        "patch_embed/bias": (dims.d_model,),
        "pos_embed": (1, dims.num_patches, dims.d_model),
    }
    for i in range(dims.layers):
        block = f"encoder/block_{i}"
        shapes |= _layer_norm(f"{block}/ln_attn", dims)
        shapes |= _attention(f"{block}/attn", dims, bias=True)
        shapes |= _layer_norm(f"{block}/ln_mlp", dims)
        shapes |= _mlp(f"{block}/mlp", dims)
    shapes |= _layer_norm("encoder/ln_final", dims)
    shapes |= {"head/kernel": (dims.d_model, dims.num_classes), "head/bias": (dims.num_classes,)}
    return shapes


def _t5_shapes(dims: ModelDims) -> dict[str, Shape]:
    """T5 v1.1: RMSNorm (scale only), no biases, gated-GELU MLP, untied LM head."""
    d = dims.d_model

    def gated_mlp(prefix: str) -> dict[str, Shape]:
        return {
            f"{prefix}/wi_0/kernel": (d, dims.mlp_dim),
            f"{prefix}/wi_1/kernel": (d, dims.mlp_dim),
            f"{prefix}/wo/kernel": (dims.mlp_dim, d),
        }

    shapes: dict[str, Shape] = {
        "token_embed/embedding": (dims.vocab_size, d),
        "encoder/relative_bias/embedding": (dims.relative_buckets, dims.num_heads),
        "decoder/relative_bias/embedding": (dims.relative_buckets, dims.num_heads),
    }
    for i in range(dims.layers):
        block = f"encoder/block_{i}"
        shapes |= {f"{block}/ln_attn/scale": (d,), f"{block}/ln_mlp/scale": (d,)}
        shapes |= _attention(f"{block}/attn", dims, bias=False)
        shapes |= gated_mlp(f"{block}/mlp")
    for i in range(dims.decoder_layers):
        block = f"decoder/block_{i}"
        shapes |= {
            f"{block}/ln_self_attn/scale": (d,),
            f"{block}/ln_cross_attn/scale": (d,),
            f"{block}/ln_mlp/scale": (d,),
        }
        shapes |= _attention(f"{block}/self_attn", dims, bias=False)
        shapes |= _attention(f"{block}/cross_attn", dims, bias=False)
        shapes |= gated_mlp(f"{block}/mlp")
    shapes |= {"encoder/ln_final/scale": (d,), "decoder/ln_final/scale": (d,)}
    shapes |= {"lm_head/kernel": (d, dims.vocab_size)}
    return shapes


def _decoder_shapes(dims: ModelDims) -> dict[str, Shape]:
    """GPT-style causal LM: learned positions, pre-LN blocks, untied LM head."""
    shapes: dict[str, Shape] = {
        "token_embed/embedding": (dims.vocab_size, dims.d_model),
        "pos_embed": (1, dims.seq_len, dims.d_model),
    }
    for i in range(dims.layers):
        block = f"decoder/block_{i}"
        shapes |= _layer_norm(f"{block}/ln_attn", dims)
        shapes |= _attention(f"{block}/attn", dims, bias=True)
        shapes |= _layer_norm(f"{block}/ln_mlp", dims)
        shapes |= _mlp(f"{block}/mlp", dims)
    shapes |= _layer_norm("decoder/ln_final", dims)
    shapes |= {"lm_head/kernel": (dims.d_model, dims.vocab_size)}
    return shapes


_SHAPES = {"vit": _vit_shapes, "t5": _t5_shapes, "decoder": _decoder_shapes}

_BACKBONE_KERNELS = ("/attn/", "/self_attn/", "/cross_attn/", "/mlp/")
EMBEDDING_TENSORS = ("token_embed/embedding", "lm_head/kernel")  # t5's, prunable by sparsity.targets


def param_shapes(dims: ModelDims) -> dict[str, Shape]:
    """Every parameter of the model, by its '/'-joined flax path (without the 'params' root)."""
    return _SHAPES[dims.family](dims)


def is_sparsified(path: str, dims: ModelDims) -> bool:
    """Which weights are pruned: every linear kernel of the backbone (attention and MLP), and for
    T5 optionally the token embedding and LM head (appendix A, "Sparsity configurations")."""
    if path.endswith("/kernel") and any(part in path for part in _BACKBONE_KERNELS):
        return True
    return dims.sparsify_embeddings and path in EMBEDDING_TENSORS


def sparsified_shapes(dims: ModelDims) -> dict[str, Shape]:
    return {p: s for p, s in param_shapes(dims).items() if is_sparsified(p, dims)}


def sparsified_params(dims: ModelDims) -> int:
    """Dense size of the sparsified weights: N / (1 - S) in the paper's notation."""
    return sum(math.prod(s) for s in sparsified_shapes(dims).values())


def total_params(dims: ModelDims) -> int:
    return sum(math.prod(s) for s in param_shapes(dims).values())


def nonzeros_at(dims: ModelDims, sparsity: float) -> int:
    """Exact non-zero count of the sparsified weights at the end of training: each tensor keeps
    round((1 - S) * size) weights, the same rounding the magnitude masks use."""
    return sum(round((1.0 - sparsity) * math.prod(s)) for s in sparsified_shapes(dims).values())


def choose_d_model(
    base: ModelDims,
    mlp_ratio: float,
    target_nonzeros: float,
    sparsity: float,
    width_multiple: int = 1,
) -> ModelDims:
    """The width (a multiple of width_multiple) whose exact non-zero count at this sparsity is
    closest to the target, in relative terms, up to d_model MAX_D_MODEL. Counts grow monotonically
    with d_model, so a bisection finds the bracketing pair and the nearer of the two wins."""

    def count(multiple: int) -> int:
        return nonzeros_at(scaled_dims(base, multiple * width_multiple, mlp_ratio), sparsity)

    widest = max(MAX_D_MODEL // width_multiple, 1)  # a target beyond it gets the widest model
    if count(widest) < target_nonzeros:  # (engine.planning.checks.reach_problem reports the miss)
        return scaled_dims(base, widest * width_multiple, mlp_ratio)
    lo, hi = 1, 1
    while count(hi) < target_nonzeros:
        lo, hi = hi, min(hi * 2, widest)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(mid) < target_nonzeros:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda k: abs(math.log(max(count(k), 1) / target_nonzeros)))
    return scaled_dims(base, best * width_multiple, mlp_ratio)



def matched_dense_width(dims: ModelDims, sparsity: float, mlp_ratio: float) -> int:
    """The width of the smaller dense model with as many backbone weights as this model keeps at
    `sparsity`: the closest exact count, widths in steps of 1 (the paper's "parameter matching a
    smaller dense version", appendix A)."""
    backbone = replace(dims, sparsify_embeddings=False)
    kept = nonzeros_at(backbone, sparsity)
    return min(dims.d_model, choose_d_model(backbone, mlp_ratio, kept, 0.0).d_model)


def matched_embedding_level(dims: ModelDims, sparsity: float, mlp_ratio: float) -> float:
    """Sparsity of T5's token embedding and LM head (vocab x d_model each) under the paper's rule
    (appendix A, "Sparsity configurations"): pruned only as far as needed to keep the embedding
    size of the smaller dense model whose backbone has this model's backbone non-zeros, i.e.
    vocab x d' weights of vocab x d, level 1 - d'/d. About 1 - sqrt(1 - S), since the backbone
    grows as d^2: 0.29, 0.5 and 0.65 at S = 0.5, 0.75 and 0.875."""
    if sparsity == 0:
        return 0.0
    return 1.0 - matched_dense_width(dims, sparsity, mlp_ratio) / dims.d_model
