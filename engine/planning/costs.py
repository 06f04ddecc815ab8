"""Training cost of sparse models (paper section 3.3, eq. 4, and appendix D).

Convention used everywhere in the engine: training FLOPs are 6 N D for decoder-only and vision
models and 3 N D for encoder-decoder models ("or half for encoder-decoder", section 3.3), with N the
non-zero count of the sparsified weights and D in examples (vision) or tokens (language).
"""

from __future__ import annotations


def c_mul(sparsity: float, start: float = 0.25, end: float = 0.75) -> float:
    """Sparse-cost multiplier of gradual magnitude pruning with the cubic schedule
    s(t) = S - S (1 - t)^3 running from fraction `start` to fraction `end` of training.

    Relative to a dense model with N weights (the run's non-zero count), a step costs
    density(t) / (1 - S): before `start` the model is dense (1 / (1 - S)); during pruning the
    mean density is 1 - S + S * integral_0^1 (1 - t)^3 dt = 1 - 3S/4; after `end` it is 1. Hence
        c_mul = (start + (end - start) (1 - 3S/4)) / (1 - S) + (1 - end) = alpha / (1 - S) + (1 - alpha)
    with alpha = start + (end - start) / 4 (pruning_cost_alpha): eq. 4 at start=0.25, end=0.75.
    A one-shot prune at `start` is the case end == start.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return c_mul_from_alpha(sparsity, pruning_cost_alpha(start, end))


def flops_per_param_example(encoder_decoder: bool) -> float:
    """The k in C = k N D: 6 (forward + backward), halved for encoder-decoder models."""
    return 3.0 if encoder_decoder else 6.0


def pruning_cost_alpha(start: float = 0.25, end: float = 0.75, exponent: float = 3.0) -> float:
    """alpha such that c_mul(S) = alpha / (1 - S) + (1 - alpha) for a gradual schedule
    s(t) = S - S (1 - t)^exponent running from fraction `start` to `end` of training.

    During pruning the mean density is 1 - S + S / (exponent + 1); integrating density / (1 - S)
    over the run gives start / (1 - S) + (end - start) (1 / (exponent + 1) / (1 - S)
    + exponent / (exponent + 1)) + (1 - end), i.e. the form above with
        alpha = start + (end - start) / (exponent + 1).
    Eq. 4 (cubic, 25% to 75%) has alpha = 0.375; dense costs (c_mul = 1 / (1 - S)) are alpha = 1;
    a one-shot prune at fraction f is alpha = f.
    """
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"need 0 <= start <= end <= 1, got start={start}, end={end}")
    if exponent <= 0.0:
        raise ValueError(f"schedule exponent must be positive, got {exponent}")
    return start + (end - start) / (exponent + 1.0)


def c_mul_from_alpha(sparsity, alpha: float):  # noqa: ANN001, ANN201 - numpy or jax arrays alike
    """c_mul(S) = alpha / (1 - S) + (1 - alpha); works on floats, numpy and jax arrays."""
    return alpha / (1.0 - sparsity) + (1.0 - alpha)


DENSE_COST_ALPHA = 1.0  # c_mul = 1 / (1 - S): the cost of training the dense base model
