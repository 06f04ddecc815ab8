"""A fixed random order-k Markov source with hierarchical Dirichlet structure.

Why this process: a tiny language model should keep improving with both capacity and data.
The next-token table is built like a hierarchical Dirichlet (backoff) language model:

    unigram   p0          Zipf over `symbols` (a random rank order)
    order j   p_j(.|c)    ~ Dirichlet(concentration * [backoff * p_{j-1}(.|suffix of c)
                                                       + (1 - backoff) * p0]),   j = 1..k
    final     p(.|c)      = (1 - smoothing) * p_k(.|c) + smoothing / symbols

so a model that only knows unigram statistics gets H0, one that has learned the bigram table gets
H1 < H0, ..., and only a model that has memorised the full order-k table reaches the entropy rate
Hk, the irreducible floor. `backoff` < 1 keeps each order's rows far from the lower order's, so
every rung of the ladder is worth a large fraction of a nat (with backoff = 1 almost everything is
bigram, which an embedding-to-logits path learns without the backbone). `smoothing` keeps every
context reachable: without it small concentrations let the chain collapse onto a few contexts.
The tables are large (symbols^k contexts, each with its own sparse
distribution) and context frequencies are Zipf-like, so more parameters memorise more contexts
and more data reveals rarer ones: both capacity and data pay off over a wide range.
Sequences start from the stationary distribution of contexts, so every window looks alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

MAX_TABLE_ENTRIES = 1 << 24  # symbols^(order+1) floats: 128 MiB as float64 is the most we hold


def _entropy(probabilities: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats, with 0 log 0 = 0."""
    p = np.clip(probabilities, 1e-300, None)
    return -(probabilities * np.log(p)).sum(axis=axis)


def _dirichlet_rows(rng: np.random.Generator, alphas: np.ndarray) -> np.ndarray:
    """One Dirichlet draw per row of `alphas`. Gamma draws with tiny shapes underflow to zero, so
    rows are floored at a negligible mass before normalising (never an all-zero row)."""
    draws = rng.standard_gamma(alphas)
    draws = np.maximum(draws, 1e-12 * draws.max(axis=-1, keepdims=True) + 1e-300)
    return draws / draws.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class MarkovSource:
    """The process: `transition[c]` is the next-symbol distribution after context index c, where
    c encodes the last `order` symbols in base `symbols` (oldest symbol most significant)."""

    symbols: int
    order: int
    transition: np.ndarray  # [symbols**order, symbols] float64
    stationary: np.ndarray  # [symbols**order] stationary distribution of contexts

    @cached_property
    def cumulative(self) -> np.ndarray:
        cdf = np.cumsum(self.transition, axis=1)
        cdf[:, -1] = 1.0  # guard against rounding leaving u > cdf[-1]
        return cdf

    def sample(self, rng: np.random.Generator, rows: int, length: int) -> np.ndarray:
        """[rows, length] int32 symbols in [0, symbols), each row a stationary window."""
        contexts = self.symbols**self.order
        state = rng.choice(contexts, size=rows, p=self.stationary)
        # The first `order` symbols are the digits of the stationary starting context.
        digits = [(state // self.symbols**i) % self.symbols for i in reversed(range(self.order))]
        out = np.empty((rows, max(length, self.order)), dtype=np.int32)
        out[:, : self.order] = np.stack(digits, axis=1)
        uniforms = rng.random((rows, max(length - self.order, 0)))
        for t in range(self.order, length):
            cdf = self.cumulative[state]
            symbol = (cdf < uniforms[:, t - self.order, None]).sum(axis=1)
            out[:, t] = symbol
            state = (state * self.symbols + symbol) % contexts
        return out[:, :length]

    def conditional_entropies(self) -> list[float]:
        """H(X_t | previous j symbols) under stationarity, for j = 0..order (nats). Entry 0 is
        the unigram predictor's loss, the last is the entropy rate (the floor)."""
        joint = (self.stationary[:, None] * self.transition).reshape((self.symbols,) * (self.order + 1))
        block_entropies = []  # H of the last j+1 symbols of a stationary (order+1)-window
        for j in range(self.order + 1):
            marginal = joint.sum(axis=tuple(range(self.order - j))) if j < self.order else joint
            block_entropies.append(float(_entropy(marginal.reshape(-1))))
        return [block_entropies[0]] + [
            block_entropies[j] - block_entropies[j - 1] for j in range(1, self.order + 1)
        ]

    def position_entropies(self, length: int) -> np.ndarray:
        """The floor at each position 0..length-1 of a stationary window: position t can use only
        the t symbols before it, so H(X_t | X_<t) = conditional_entropies[min(t, order)]."""
        conditional = self.conditional_entropies()
        return np.asarray([conditional[min(t, self.order)] for t in range(length)])


def _zipf_unigram(rng: np.random.Generator, symbols: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, symbols + 1) ** exponent
    weights = weights[rng.permutation(symbols)]
    return weights / weights.sum()


def _stationary_contexts(transition: np.ndarray, symbols: int, order: int) -> np.ndarray:
    """Stationary distribution over contexts by power iteration: context (a, rest) followed by
    symbol s becomes context (rest, s)."""
    contexts = symbols**order
    mu = np.full(contexts, 1.0 / contexts)
    for _ in range(2000):
        flow = (mu[:, None] * transition).reshape(symbols, contexts)  # [oldest, (rest, s)]
        new = flow.sum(axis=0)
        if np.abs(new - mu).sum() < 1e-13:
            return new
        mu = new
    return mu / mu.sum()


def make_markov_source(
    rng: np.random.Generator,
    symbols: int,
    order: int,
    concentration: float,
    backoff: float,
    smoothing: float,
    zipf_exponent: float,
) -> MarkovSource:
    """Draw the fixed tables of the process (see the module docstring)."""
    if symbols < 2 or order < 1 or concentration <= 0:
        raise ValueError("need symbols >= 2, order >= 1 and concentration > 0")
    if not (0.0 <= backoff <= 1.0 and 0.0 <= smoothing < 1.0):
        raise ValueError("need 0 <= backoff <= 1 and 0 <= smoothing < 1")
    if symbols ** (order + 1) > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"symbols^(order+1) = {symbols}^{order + 1} exceeds {MAX_TABLE_ENTRIES} table entries; "
            "use fewer symbols or a lower order"
        )
    unigram = _zipf_unigram(rng, symbols, zipf_exponent)[None, :]
    table = unigram  # order 0: one context
    for _ in range(order):
        # Each new context (a, c) draws around the row of its suffix c; index = a * len + c.
        parents = backoff * np.tile(table, (symbols, 1)) + (1.0 - backoff) * unigram
        table = _dirichlet_rows(rng, concentration * parents)
    table = (1.0 - smoothing) * table + smoothing / symbols
    stationary = _stationary_contexts(table, symbols, order)
    return MarkovSource(symbols, order, table, stationary)
