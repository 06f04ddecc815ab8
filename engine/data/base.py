"""What every data source promises the training loop, and the seeding that makes it resumable.

A source is a pure function of (source seed, step): `batch(k)` never depends on which batches were
drawn before, so a run resumed at step k sees exactly what an uninterrupted run would. All
randomness goes through `rng_for`, a counter-based numpy generator keyed by (seed, stream, index).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np

Batch = dict[str, np.ndarray]

# Stream tags keep training, evaluation, splitting and corruption randomness independent even when
# they share a seed and an index. Values are arbitrary but frozen: changing one changes every batch.
TRAIN_STREAM = 1
EVAL_STREAM = 2
SPLIT_STREAM = 3
EPOCH_STREAM = 4
TASK_STREAM = 5  # the fixed task itself: teacher weights, Markov tables, pattern banks
CORRUPTION_STREAM = 6  # span-corruption noise for sources whose tokens come from files

DEFAULT_EVAL_EXAMPLES = 1024
DEFAULT_EVAL_BATCH_SIZE = 128


@runtime_checkable
class DataSource(Protocol):
    """Deterministic, step-indexed batches plus a fixed validation set.

    examples_per_step: the training batch size.
    units_per_example: 1 for images; tokens per example for language (decoder: seq_len; t5: the
        encoder input length), so D = steps * examples_per_step * units_per_example.
    available_examples: training examples before the data repeats; None for infinite sources.
    fingerprint: a short hash of everything that determines the data (settings and file contents),
        for provenance in results and fits.
    """

    examples_per_step: int
    units_per_example: int
    fingerprint: str

    @property
    def available_examples(self) -> int | None:  # read-only: a source says, the loop reads
        ...

    def batch(self, step: int) -> Batch:
        """The training batch of this step; depends only on the source's seed and `step`."""
        ...

    def eval_batches(self) -> list[Batch]:
        """The fixed validation set, disjoint from training data, in equal-size batches."""
        ...


def rng_for(seed: int, stream: int, index: int) -> np.random.Generator:
    """A fresh generator for one (seed, stream, index) cell; no state is carried between cells."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.default_rng([seed, stream, index])


def fingerprint_of(description: dict[str, object]) -> str:
    """Stable 16-hex-digit hash of a JSON-serialisable description."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_eval_sizes(eval_examples: int, eval_batch_size: int) -> None:
    """The validation set is split into equal batches, so one jitted eval step serves them all."""
    if eval_batch_size < 1 or eval_examples < eval_batch_size:
        raise ValueError(
            f"eval_examples ({eval_examples}) must be at least eval_batch_size ({eval_batch_size}) >= 1"
        )
    if eval_examples % eval_batch_size:
        raise ValueError(
            f"eval_examples ({eval_examples}) must be a multiple of eval_batch_size ({eval_batch_size})"
        )


def step_batches(source: DataSource, start: int, stop: int) -> Iterator[Batch]:
    """The batches of steps start..stop-1 in order: a source's own `batches(start, stop)` when it
    reads ahead (the prepared-cache sources prefetch while the step runs), else `batch(step)`."""
    batches = getattr(source, "batches", None)
    if batches is not None:
        return batches(start, stop)
    return (source.batch(step) for step in range(start, stop))
