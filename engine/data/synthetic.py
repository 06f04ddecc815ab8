"""Built-in infinite sources: teacher-labelled images (vit) and Markov token streams (t5, decoder).

Both are fixed tasks drawn once from the source seed; training batches are fresh samples keyed by
(seed, step), the validation set by (seed, eval block), so nothing repeats and a resumed run sees
the same batches. The tasks are tuned so tiny CPU models (thousands to ~100K weights, a few
hundred steps) show real scaling; `reference_losses` gives each task's floor and trivial loss.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from functools import lru_cache, partial

import numpy as np

from engine.data.base import (
    DEFAULT_EVAL_BATCH_SIZE,
    DEFAULT_EVAL_EXAMPLES,
    EVAL_STREAM,
    TASK_STREAM,
    TRAIN_STREAM,
    Batch,
    check_eval_sizes,
    fingerprint_of,
    rng_for,
)
from engine.data.layouts import TokenLayout, token_layout
from engine.data.markov import MarkovSource, make_markov_source
from engine.data.teacher import ImageTask, make_image_task
from engine.errors import UserError
from engine.planning.sizing import ModelDims

FIRST_SYMBOL_ID = 2  # synthetic symbols start above PAD = 0 and EOS = 1
RECENT_BATCHES_BYTES = 256 << 20


class RecentBatches:
    """Batches kept for the next run that draws them. A sweep's runs of one task, seed and batch
    size read the very same batch at every step (its 50-step runs read the first 50 of its 800-step
    run's), so a sweep makes each batch once instead of once per run. The least recently used go
    first past `limit_bytes`; kept arrays are read-only, since runs share them."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.kept: OrderedDict[Hashable, Batch] = OrderedDict()
        self.bytes = 0

    def get(self, key: Hashable, make: Callable[[], Batch]) -> Batch:
        if key in self.kept:
            self.kept.move_to_end(key)
            return self.kept[key]
        batch = make()
        for array in batch.values():
            array.flags.writeable = False
        self.kept[key] = batch
        self.bytes += _nbytes(batch)
        while self.bytes > self.limit_bytes and len(self.kept) > 1:
            self.bytes -= _nbytes(self.kept.popitem(last=False)[1])
        return batch

    def clear(self) -> None:
        self.kept.clear()
        self.bytes = 0


def _nbytes(batch: Batch) -> int:
    return sum(array.nbytes for array in batch.values())


recent_batches = RecentBatches(RECENT_BATCHES_BYTES)


def forget_recent() -> None:
    """Drop the kept batches and tasks: the state of a fresh process (the benchmark's passes)."""
    recent_batches.clear()
    _image_task.cache_clear()
    _markov_source.cache_clear()


@dataclass(frozen=True)
class SyntheticImagesSettings:
    """Settings of `synthetic_images` (vit). Defaults give floor ~0.33 vs trivial ~0.69 per class
    (the loss sums over classes: x16 for vit_sweep's 16 labels).

    teacher_width: hidden units per teacher layer (the number of features to discover).
    teacher_layers: hidden layers of the teacher MLP.
    teacher_frequency: std of the teacher's pre-activations; larger is more oscillating, harder.
    feature_decay: readout weights decay as unit_index^-feature_decay (a long tail of weak features).
    label_temperature: logits are standardised then divided by this; lower gives sharper labels
        and a lower floor.
    patterns: size of the fixed bank of smooth random patterns images are mixed from.
    active_patterns: patterns mixed into each image.
    pixel_noise: std of white noise added to every pixel (images have unit signal variance).
    smoothness: spectral exponent of the patterns (power ~ 1/f^smoothness).
    eval_examples, eval_batch_size: the fixed validation set and its batch size.
    """

    teacher_width: int = 256
    teacher_layers: int = 1
    teacher_frequency: float = 0.75
    feature_decay: float = 1.0
    label_temperature: float = 0.3
    patterns: int = 64
    active_patterns: int = 4
    pixel_noise: float = 0.3
    smoothness: float = 2.5
    eval_examples: int = DEFAULT_EVAL_EXAMPLES
    eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE


@dataclass(frozen=True)
class SyntheticTokensSettings:
    """Settings of `synthetic_tokens` (t5, decoder): a hierarchical-Dirichlet order-k Markov chain
    (engine/data/markov.py). Defaults: entropy rate ~1.49 nats vs unigram ~3.41.

    symbols: distinct content tokens (ids 2..symbols+1); the model's vocab must hold them (+ T5
        sentinels).
    order: the chain's order k; the table has symbols^k contexts to memorise.
    concentration: Dirichlet mass of each row around its backoff distribution; lower is sparser,
        lower-entropy rows.
    backoff: weight of the lower-order row in each row's prior (the rest is the unigram); lower
        makes higher orders carry more information.
    smoothing: uniform mass mixed into every row, which keeps all contexts reachable.
    zipf_exponent: unigram frequencies fall as rank^-zipf_exponent.
    eval_examples, eval_batch_size: the fixed validation set and its batch size.
    """

    symbols: int = 64
    order: int = 2
    concentration: float = 2.0
    backoff: float = 0.5
    smoothing: float = 0.05
    zipf_exponent: float = 1.0
    eval_examples: int = DEFAULT_EVAL_EXAMPLES
    eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE


class _SyntheticSource:
    """Training batches keyed by (seed, step), the validation set by (seed, eval block); both kept
    in `recent_batches` under `recall_key` (everything that determines a batch but the step)."""

    seed: int
    examples_per_step: int
    settings: SyntheticImagesSettings | SyntheticTokensSettings
    recall_key: Hashable

    def _sample(self, rng: np.random.Generator, rows: int) -> Batch:
        raise NotImplementedError

    def _drawn(self, stream: int, index: int, rows: int) -> Batch:
        return self._sample(rng_for(self.seed, stream, index), rows)

    def batch(self, step: int) -> Batch:
        # The generator is made only on a miss: making one costs ~0.25 ms, a kept batch's lookup
        # microseconds (generators took 4.4 of a profiled default sweep's 6.5 s of batch time).
        return recent_batches.get(
            (self.recall_key, TRAIN_STREAM, self.examples_per_step, step),
            partial(self._drawn, TRAIN_STREAM, step, self.examples_per_step),
        )

    def eval_batches(self) -> list[Batch]:
        """Eval batch i is drawn from its own (seed, EVAL, i) cell, so the set depends only on the
        task, the seed and the eval sizes (never on the run's training batch size)."""
        size = self.settings.eval_batch_size
        return [
            recent_batches.get((self.recall_key, EVAL_STREAM, size, index),
                               partial(self._drawn, EVAL_STREAM, index, size))
            for index in range(self.settings.eval_examples // size)
        ]


class SyntheticImages(_SyntheticSource):
    """Images from a fixed bank of smooth patterns, multi-hot labels from a fixed random teacher."""

    units_per_example = 1
    available_examples = None

    def __init__(
        self, settings: SyntheticImagesSettings, dims: ModelDims, batch_size: int, seed: int
    ) -> None:
        if dims.family != "vit":
            raise UserError(f"synthetic_images feeds vit models, not {dims.family!r}")
        check_eval_sizes(settings.eval_examples, settings.eval_batch_size)
        self.settings = settings
        self.examples_per_step = batch_size
        self.seed = seed
        self.task: ImageTask = _image_task(settings, dims.image_size, dims.channels, dims.num_classes, seed)
        self.fingerprint = fingerprint_of(
            {
                "kind": "synthetic_images",
                "seed": seed,
                "settings": asdict(settings),
                "shape": [dims.image_size, dims.channels, dims.num_classes],
            }
        )
        self.recall_key = self.fingerprint

    def _sample(self, rng: np.random.Generator, rows: int) -> Batch:
        images, labels = self.task.sample(rng, rows)
        return {"images": images, "labels": labels}

    def reference_losses(self) -> dict[str, float]:
        """Monte Carlo floor, trivial (class-rate) and zero-logit losses, summed over classes, and
        `eval_floor`: the teacher's own loss on the fixed validation set, the floor of the very
        losses a sweep fits (it differs from `floor` by the validation set's sampling noise)."""
        losses = self.task.reference_losses(rng_for(self.seed, EVAL_STREAM, 1 << 30))
        batches = self.eval_batches()
        losses["eval_floor"] = float(np.mean([self.task.teacher_loss(b["images"], b["labels"]) for b in batches]))
        return losses


class SyntheticTokens(_SyntheticSource):
    """Token windows from a fixed random Markov chain, as decoder windows or T5 span corruption."""

    available_examples = None

    def __init__(
        self, settings: SyntheticTokensSettings, dims: ModelDims, batch_size: int, seed: int
    ) -> None:
        check_eval_sizes(settings.eval_examples, settings.eval_batch_size)
        self.layout: TokenLayout = token_layout(dims)
        self.layout.check_content_fits(FIRST_SYMBOL_ID + settings.symbols, "synthetic_tokens")
        self.settings = settings
        self.examples_per_step = batch_size
        self.units_per_example = dims.seq_len
        self.seed = seed
        try:
            self.process: MarkovSource = _markov_source(settings, seed)
        except ValueError as error:
            raise UserError(f"synthetic_tokens: {error}") from error
        self.fingerprint = fingerprint_of(
            {"kind": "synthetic_tokens", "seed": seed, "settings": asdict(settings)}
        )
        self.recall_key = (self.fingerprint, self.layout)

    def _sample(self, rng: np.random.Generator, rows: int) -> Batch:
        raw = self.process.sample(rng, rows, self.layout.raw_length) + FIRST_SYMBOL_ID
        return self.layout.format(rng, raw)

    def reference_losses(self) -> dict[str, float]:
        """Exact losses (nats per predicted token) of reference predictors on decoder windows:
        `floor`: the true conditional at every position (mean over positions 1..seq_len);
        `order_j`: knowing only the previous j tokens (order_0 is the unigram, the trivial loss);
        `uniform`: an untrained model spreading mass over the whole vocab.
        For t5 these are per-token bounds on the noise tokens: bidirectional context can only
        lower the floor, and sentinel/EOS targets add their own (small) terms."""
        conditional = self.process.conditional_entropies()
        positions = self.process.position_entropies(self.layout.raw_length)[1:]
        losses = {"floor": float(positions.mean()), "trivial": conditional[0]}
        losses |= {f"order_{j}": value for j, value in enumerate(conditional)}
        losses["uniform"] = float(np.log(self.layout.vocab_size))
        return losses


# A sweep builds one source per run; its runs share the task, which takes ~70 ms to draw.
@lru_cache(maxsize=4)
def _image_task(settings: SyntheticImagesSettings, image_size: int, channels: int, classes: int, seed: int) -> ImageTask:
    return make_image_task(
        rng_for(seed, TASK_STREAM, 0),
        image_size=image_size,
        channels=channels,
        classes=classes,
        teacher_width=settings.teacher_width,
        teacher_layers=settings.teacher_layers,
        teacher_frequency=settings.teacher_frequency,
        feature_decay=settings.feature_decay,
        label_temperature=settings.label_temperature,
        patterns=settings.patterns,
        active_patterns=settings.active_patterns,
        pixel_noise=settings.pixel_noise,
        smoothness=settings.smoothness,
    )


@lru_cache(maxsize=4)
def _markov_source(settings: SyntheticTokensSettings, seed: int) -> MarkovSource:
    return make_markov_source(
        rng_for(seed, TASK_STREAM, 0),
        symbols=settings.symbols,
        order=settings.order,
        concentration=settings.concentration,
        backoff=settings.backoff,
        smoothing=settings.smoothing,
        zipf_exponent=settings.zipf_exponent,
    )
