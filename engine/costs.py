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
        c_mul = (start + (end - start) (1 - 3S/4)) / (1 - S) + (1 - end),
    which is eq. 4 at start=0.25, end=0.75. A one-shot prune at `start` is the case end == start.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"need 0 <= start <= end <= 1, got start={start}, end={end}")
    pruning = (end - start) * (1.0 - 0.75 * sparsity)
    return (start + pruning) / (1.0 - sparsity) + (1.0 - end)


def c_mul_dense(sparsity: float) -> float:
    """Dense-cost multiplier: the cost of training the dense base model of size N / (1 - S)."""
    return 1.0 / (1.0 - sparsity)


def flops_per_param_example(encoder_decoder: bool) -> float:
    """The k in C = k N D: 6 (forward + backward), halved for encoder-decoder models."""
    return 3.0 if encoder_decoder else 6.0
