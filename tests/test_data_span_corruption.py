"""T5 span corruption: T5's lengths, noise density, sentinel order, lossless reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import reconstruct

from engine.data.span_corruption import (
    EOS_ID,
    PAD_ID,
    random_spans_noise_mask,
    raw_length_for_inputs,
    span_corrupt,
    span_counts,
)

VOCAB = 200


def test_lengths_match_t5_random_spans_helper() -> None:
    # T5's defaults: 512 input tokens come from 568 raw tokens and give 114 target tokens.
    counts = raw_length_for_inputs(512)
    assert (counts.raw_length, counts.inputs_length, counts.targets_length) == (568, 512, 114)
    for inputs_length in (8, 32, 64, 100, 128, 256):
        counts = raw_length_for_inputs(inputs_length)
        assert counts.inputs_length <= inputs_length
        assert span_counts(counts.raw_length + 1).inputs_length > inputs_length


@pytest.mark.parametrize("inputs_length", [16, 64, 512])
def test_noise_mask_density_spans_and_start(inputs_length: int) -> None:
    counts = raw_length_for_inputs(inputs_length)
    mask = random_spans_noise_mask(np.random.default_rng(0), counts, rows=200)
    assert mask.shape == (200, counts.raw_length)
    assert (mask.sum(axis=1) == counts.noise_tokens).all()
    assert abs(counts.noise_tokens / counts.raw_length - 0.15) < 0.5 / counts.raw_length + 0.01
    starts = mask & ~np.pad(mask[:, :-1], ((0, 0), (1, 0)))
    assert (starts.sum(axis=1) == counts.noise_spans).all()
    assert not mask[:, 0].any()  # spans alternate starting with non-noise
    if inputs_length == 512:
        assert abs(counts.noise_tokens / counts.noise_spans - 3.0) < 0.1


def test_mask_positions_are_spread_evenly_away_from_the_ends() -> None:
    # Like T5 (random_roll=False), the first span is never noise and the last always is, so only
    # the interior is uniform.
    counts = raw_length_for_inputs(128)
    mask = random_spans_noise_mask(np.random.default_rng(1), counts, rows=4000)
    assert mask[:, -1].all()
    interior = mask.mean(axis=0)[20:-20]
    assert abs(interior.mean() - 0.15) < 0.02 and interior.std() < 0.02


def test_inputs_and_targets_reconstruct_the_original() -> None:
    counts = raw_length_for_inputs(64)
    rng = np.random.default_rng(2)
    tokens = rng.integers(3, VOCAB - counts.noise_spans, size=(50, counts.raw_length))
    out = span_corrupt(rng, tokens, VOCAB, targets_length=counts.targets_length + 3)
    assert out["inputs"].shape == (50, 64) and out["targets"].shape == (50, counts.targets_length + 3)
    assert (out["targets"][:, -3:] == PAD_ID).all()
    for row in range(50):
        inputs, targets = out["inputs"][row], out["targets"][row]
        assert inputs[-1] == EOS_ID and targets[counts.targets_length - 1] == EOS_ID
        sentinels = [int(t) for t in inputs if t >= VOCAB - counts.noise_spans]
        assert sentinels == list(range(VOCAB - 1, VOCAB - 1 - counts.noise_spans, -1))
        target_sentinels = [int(t) for t in targets if t >= VOCAB - counts.noise_spans]
        assert target_sentinels == sentinels
        assert np.array_equal(reconstruct(inputs, targets, VOCAB, counts.noise_spans), tokens[row])


def test_corruption_is_a_pure_function_of_rng_and_tokens() -> None:
    tokens = np.random.default_rng(3).integers(3, 100, size=(4, 70))
    first = span_corrupt(np.random.default_rng(7), tokens, VOCAB, 14)
    second = span_corrupt(np.random.default_rng(7), tokens, VOCAB, 14)
    other = span_corrupt(np.random.default_rng(8), tokens, VOCAB, 14)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert not np.array_equal(first["inputs"], other["inputs"])


def test_too_short_targets_are_rejected() -> None:
    tokens = np.zeros((1, 568), dtype=np.int32) + 5
    with pytest.raises(ValueError, match="needs targets of length 114"):
        span_corrupt(np.random.default_rng(0), tokens, VOCAB, 100)
