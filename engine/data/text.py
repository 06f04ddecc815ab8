"""The user's text (t5, decoder), read from the prepared token cache by random access.

The raw files are prepared once into shared token shards (engine/data/cache.py); this source maps
the shards as one token sequence cut into examples of the model's raw length, holds out a seeded
validation set and reads training example g = step * batch + i at a keyed global shuffle of its
epoch (engine/data/shuffle.py). Nothing here grows with the corpus: rows are read by position
as steps need them, and `batches` prefetches them with Grain's threads while the compiled step
runs. Each of several jax.distributed processes reads only its own rows of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.data.base import CORRUPTION_STREAM, EVAL_STREAM, Batch, fingerprint_of, rng_for
from engine.data.cache import TextSource, TokenManifest, TokenStream, find_manifest, prepare_tokens
from engine.data.finite import OnExhausted, check_budget
from engine.data.layouts import TokenLayout, token_layout
from engine.data.prefetch import prefetched
from engine.data.progress import byte_progress
from engine.data.readers import TextFormat
from engine.data.sentencepiece_training import SentencePieceTraining, existing_model, trained_model
from engine.data.shuffle import ExampleOrder, process_share
from engine.data.span_corruption import corrupt_with_mask, random_spans_noise_mask
from engine.data.tokenizers import TokenizerRef, tokenizer_ref
from engine.errors import UserError
from engine.planning.sizing import ModelDims

DEFAULT_FILE_EVAL_FRACTION = 0.05
DEFAULT_FILE_EVAL_BATCH_SIZE = 64
DEFAULT_MAX_EVAL_EXAMPLES = 2048


@dataclass(frozen=True)
class TextFilesSettings:
    """Settings of `text_files` (t5, decoder).

    paths: files, directories (read recursively) or glob patterns, relative to the spec's folder;
        read in sorted order, an EOS after each document, concatenated and cut into examples.
    tokenizer: "bytes" (ids = byte + 3), the path of a SentencePiece .model or a Hugging Face
        tokenizer .json file, or a SentencePieceTraining (a model trained on these files).
    format: "text" (a file is a document), "jsonl" (.gz/.bz2/.xz too), "parquet", "array_record".
    text_field: the JSON field or Parquet column holding each document's text.
    on_exhausted: "refuse" (UserError) or "warn" (warn, then a fresh permutation per epoch) when
        the run needs more training examples than the files hold.
    eval_fraction: share of examples held out for validation (whole eval batches, at least one),
    max_eval_examples: at most this many (a fixed validation set, not a share of a huge corpus).
    eval_batch_size: examples per validation batch.
    """

    paths: tuple[str, ...]
    tokenizer: str | SentencePieceTraining = "bytes"
    format: TextFormat = "text"
    text_field: str = "text"
    on_exhausted: OnExhausted = "refuse"
    eval_fraction: float = DEFAULT_FILE_EVAL_FRACTION
    eval_batch_size: int = DEFAULT_FILE_EVAL_BATCH_SIZE
    max_eval_examples: int = DEFAULT_MAX_EVAL_EXAMPLES


def eval_count(total: int, settings: TextFilesSettings) -> int:
    """Validation examples: the eval fraction in whole batches, at least one batch, capped."""
    size = settings.eval_batch_size
    share = int(total * settings.eval_fraction) // size * size
    cap = max(size, settings.max_eval_examples // size * size)
    return max(size, min(share, cap))


def text_source(settings: TextFilesSettings, base_dir: Path, train: bool = True) -> TextSource | None:
    """What the cache is keyed by. A tokenizer still to be trained is trained now when `train`;
    otherwise an already trained one is looked up, and None returned when there is none yet
    (planning estimates without training or reading the corpus)."""
    from engine.data.files import resolve_paths

    files = tuple(resolve_paths(settings.paths, base_dir))
    if isinstance(settings.tokenizer, SentencePieceTraining):
        args = (files, settings.format, settings.text_field, settings.tokenizer)
        model = trained_model(*args) if train else existing_model(*args)
        if model is None:
            return None
        ref = TokenizerRef("sentencepiece", model)
    else:
        ref = tokenizer_ref(settings.tokenizer, base_dir)
    return TextSource(files, settings.format, settings.text_field, ref)


def prepared_manifest(source: TextSource, workers: int | None = None, bar: bool = False) -> TokenManifest:
    """The source's token cache, prepared now when missing (with a progress bar when `bar`, else
    announced in one line)."""
    found = find_manifest(source)
    if found is not None:
        return found
    total = sum(path.stat().st_size for path in source.files)
    with byte_progress(total, f"preparing {len(source.files)} text file(s)", bar) as advance:
        return prepare_tokens(source, workers=workers, progress=advance)


class TextFiles:
    """Token examples from the prepared cache, formatted for a decoder or T5."""

    def __init__(
        self,
        settings: TextFilesSettings,
        dims: ModelDims,
        batch_size: int,
        seed: int,
        base_dir: Path,
        total_steps: int | None = None,
        process: tuple[int, int] = (0, 1),
    ) -> None:
        self.layout: TokenLayout = token_layout(dims)
        source = text_source(settings, base_dir)
        assert source is not None
        files = source.files
        self.name = files[0].as_posix() if len(files) == 1 else f"{len(files)} text files under {files[0].parent}"
        # before preparing: a vocabulary too small for the tokenizer is an error worth no wait
        self.layout.check_content_fits(source.tokenizer.load().id_count, f"tokenizer {source.tokenizer.kind} ({self.name})")
        manifest = prepared_manifest(source)
        self.stream = TokenStream(manifest, self.layout.raw_length)
        total = len(self.stream)
        if total < 2:
            raise UserError(f"{self.name}: {manifest.tokens} tokens make fewer than 2 examples of "
                            f"{self.layout.raw_length} tokens")
        evals = eval_count(total, settings)
        if total - evals < 1:
            raise UserError(f"{self.name}: {total} examples are too few to hold out {evals} for validation "
                            f"(eval_batch_size {settings.eval_batch_size}) and still train")
        self.order = ExampleOrder(total, evals, seed)
        self.settings = settings
        self.seed = seed
        self.manifest = manifest
        self.examples_per_step = batch_size
        self.units_per_example = dims.seq_len
        self.available_examples = self.order.train_examples
        self._index, self._count = process
        if batch_size % self._count:
            raise UserError(f"batch_size {batch_size} does not split over {self._count} processes")
        self.process_local = self._count > 1  # batches hold this process's rows only
        self._warned = False
        check_budget(self.name, self.available_examples,
                     None if total_steps is None else total_steps * batch_size, settings.on_exhausted)
        self.fingerprint = fingerprint_of(
            {"kind": "text_files", "seed": seed, "settings": asdict(settings), "content": manifest.key,
             "raw_length": self.layout.raw_length}
        )

    def _format(self, rows: np.ndarray, rng: np.random.Generator, whole: int, first: int) -> Batch:
        """Rows first..first+len(rows)-1 of a batch of `whole` rows -> the family's batch. T5's
        noise masks are drawn for the whole batch and this share's rows taken, so each process's
        rows are exactly those of the batch one process would build."""
        counts = self.layout.span_counts
        if counts is None:
            return self.layout.format(rng, rows)
        noise = random_spans_noise_mask(rng, counts, whole)[first : first + len(rows)]
        return corrupt_with_mask(rows, noise, self.layout.vocab_size, self.layout.target_len, counts)

    def batch(self, step: int) -> Batch:
        """This process's rows of training step `step`."""
        positions = process_share(step, self.examples_per_step, self._index, self._count)
        end = (step + 1) * self.examples_per_step
        if end > self.available_examples:
            self._on_repeat(end)
        rows = np.stack([self.stream[self.order.train_example(g)] for g in positions])
        return self._format(rows, rng_for(self.seed, CORRUPTION_STREAM, step), self.examples_per_step,
                            self._index * len(positions))

    def batches(self, start: int, stop: int) -> Iterator[Batch]:
        """Steps start..stop-1 in order, read ahead in a background thread while the caller trains."""
        return prefetched(self.batch, start, stop)

    def eval_batches(self) -> list[Batch]:
        size = self.settings.eval_batch_size
        batches = []
        for start in range(0, self.order.eval_examples, size):
            rows = np.stack([self.stream[self.order.eval_example(i)] for i in range(start, start + size)])
            batches.append(self._format(rows, rng_for(self.seed, EVAL_STREAM, start // size), size, 0))
        return batches

    def _on_repeat(self, needed: int) -> None:
        if not self._warned:  # check_budget refuses (every time) or warns (said once)
            check_budget(self.name, self.available_examples, needed, self.settings.on_exhausted)
            self._warned = True
