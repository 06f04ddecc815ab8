"""T5's span-corruption objective (Raffel et al. 2020, sec. 3.1.4), in numpy.

Follows the reference preprocessors of google-research/text-to-text-transfer-transformer
(`random_spans_helper`, `random_spans_noise_mask`, `noise_span_to_unique_sentinel`): a raw chunk of
`raw_length` tokens gets round(raw_length * noise_density) noise tokens in
round(noise / mean_span) spans; noise and non-noise span lengths are independent uniformly random
compositions, spans alternate starting with non-noise. Inputs keep the non-noise tokens with one
sentinel per noise span, targets hold each noise span behind its sentinel; both end with EOS.
Sentinels count down from vocab_size - 1, like T5's extra ids. The token counts are deterministic,
so inputs are exactly `inputs_length` long and targets exactly `targets_length`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_ID = 0
EOS_ID = 1
NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0


@dataclass(frozen=True)
class SpanCounts:
    """The deterministic token counts of span corruption for one raw length."""

    raw_length: int
    noise_tokens: int
    noise_spans: int

    @property
    def inputs_length(self) -> int:
        return self.raw_length - self.noise_tokens + self.noise_spans + 1  # + EOS

    @property
    def targets_length(self) -> int:
        return self.noise_tokens + self.noise_spans + 1  # + EOS


def span_counts(
    raw_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> SpanCounts:
    """Noise tokens and spans for a raw chunk, with T5's guards against degenerate masks
    (at least one noise and one non-noise token, at least one span)."""
    length = max(raw_length, 2)
    noise_tokens = min(max(round(length * noise_density), 1), length - 1)
    noise_spans = max(round(noise_tokens / mean_noise_span_length), 1)
    return SpanCounts(raw_length, noise_tokens, noise_spans)


def raw_length_for_inputs(
    inputs_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> SpanCounts:
    """The longest raw chunk whose corrupted inputs (with EOS) fit in `inputs_length`, as T5's
    random_spans_helper picks it; e.g. 512 -> 568 raw tokens and 114 target tokens."""
    if inputs_length < 3:
        raise ValueError(f"span corruption needs inputs_length >= 3, got {inputs_length}")
    raw = inputs_length - 1
    while span_counts(raw + 1, noise_density, mean_noise_span_length).inputs_length <= inputs_length:
        raw += 1
    return span_counts(raw, noise_density, mean_noise_span_length)


def _random_composition(rng: np.random.Generator, total: int, parts: int, rows: int) -> np.ndarray:
    """[rows, parts] positive integers summing to `total` per row, every composition equally
    likely: choose parts - 1 distinct cut points among the total - 1 gaps."""
    cuts = np.sort(rng.random((rows, total - 1)).argsort(axis=1)[:, : parts - 1] + 1, axis=1)
    bounds = np.concatenate(
        [np.zeros((rows, 1), int), cuts, np.full((rows, 1), total, dtype=int)], axis=1
    )
    return np.diff(bounds, axis=1)


def random_spans_noise_mask(
    rng: np.random.Generator, counts: SpanCounts, rows: int
) -> np.ndarray:
    """[rows, raw_length] bool, True at noise tokens; every row an independent T5 mask."""
    noise = _random_composition(rng, counts.noise_tokens, counts.noise_spans, rows)
    nonnoise = _random_composition(
        rng, counts.raw_length - counts.noise_tokens, counts.noise_spans, rows
    )
    # Interleave non-noise, noise, non-noise, ... and mark the odd-numbered spans.
    interleaved = np.stack([nonnoise, noise], axis=2).reshape(rows, 2 * counts.noise_spans)
    span_index = np.repeat(
        np.tile(np.arange(2 * counts.noise_spans), rows), interleaved.reshape(-1)
    ).reshape(rows, counts.raw_length)
    return span_index % 2 == 1


def _replace_spans_with_sentinels(
    tokens: np.ndarray, span_mask: np.ndarray, vocab_size: int, out_length: int
) -> np.ndarray:
    """Each run of masked tokens becomes one sentinel (vocab_size - 1, - 2, ... in order), then
    EOS, padded with PAD to `out_length`."""
    rows, length = tokens.shape
    previous_masked = np.pad(span_mask[:, :-1], ((0, 0), (1, 0)))
    first_masked = span_mask & ~previous_masked
    sentinels = vocab_size - np.cumsum(first_masked, axis=1)
    replaced = np.where(first_masked, sentinels, tokens)
    keep = ~(span_mask & previous_masked)
    # Every row keeps the same number of tokens (the span counts are deterministic), so the kept
    # tokens reshape into a rectangle.
    kept = replaced[keep].reshape(rows, -1)
    if kept.shape[1] + 1 > out_length:
        raise ValueError(f"corrupted sequence of {kept.shape[1] + 1} tokens exceeds {out_length}")
    out = np.full((rows, out_length), PAD_ID, dtype=np.int32)
    out[:, : kept.shape[1]] = kept
    out[:, kept.shape[1]] = EOS_ID
    return out


def span_corrupt(
    rng: np.random.Generator,
    tokens: np.ndarray,
    vocab_size: int,
    targets_length: int,
    noise_density: float = NOISE_DENSITY,
    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH,
) -> dict[str, np.ndarray]:
    """Span-corrupt raw tokens [rows, raw_length] into {"inputs", "targets"} int32 arrays.

    Inputs are exactly the counts' inputs_length (no padding); targets are padded with PAD to
    `targets_length`, which must be at least the counts' targets_length.
    """
    counts = span_counts(tokens.shape[1], noise_density, mean_noise_span_length)
    if targets_length < counts.targets_length:
        raise ValueError(
            f"span corruption of {counts.raw_length} tokens needs targets of length "
            f"{counts.targets_length}, got {targets_length}"
        )
    return corrupt_with_mask(tokens, random_spans_noise_mask(rng, counts, tokens.shape[0]), vocab_size,
                             targets_length, counts)


def corrupt_with_mask(
    tokens: np.ndarray, noise: np.ndarray, vocab_size: int, targets_length: int, counts: SpanCounts
) -> dict[str, np.ndarray]:
    """Span corruption of rows whose noise masks are given (rows of a mask drawn for a larger
    batch: a process's share of a global batch gets exactly the rows it would have)."""
    return {
        "inputs": _replace_spans_with_sentinels(tokens, noise, vocab_size, counts.inputs_length),
        "targets": _replace_spans_with_sentinels(tokens, ~noise, vocab_size, targets_length),
    }
