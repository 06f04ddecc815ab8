"""One entry point from a spec's `data.source` to a DataSource.

    build_source("synthetic_tokens", {"order": 2, "concentration": 2.0}, dims, batch_size=32,
                 seed=0, base_dir=spec_path.parent, total_steps=300)

`settings` is a mapping (e.g. a pydantic model's `model_dump()`), a settings dataclass, or None for
all defaults. A "kind" key equal to `kind` is ignored and a "seed" key must equal the `seed` argument, and the
spec's tokenizer mapping ({kind: bytes}, {kind: sentencepiece, model: path}, ...) is accepted, so a
dumped spec source (`model_dump()`) works as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

from engine.data.base import DataSource
from engine.data.files import ImageArrays, ImageArraysSettings
from engine.data.images import ImageRecords, ImageRecordsSettings
from engine.data.sentencepiece_training import SentencePieceTraining
from engine.data.synthetic import (
    SyntheticImages,
    SyntheticImagesSettings,
    SyntheticTokens,
    SyntheticTokensSettings,
)
from engine.data.text import TextFiles, TextFilesSettings
from engine.planning.sizing import ModelDims

SETTINGS_TYPES: dict[str, type] = {
    "synthetic_images": SyntheticImagesSettings,
    "synthetic_tokens": SyntheticTokensSettings,
    "text_files": TextFilesSettings,
    "image_arrays": ImageArraysSettings,
    "image_records": ImageRecordsSettings,
}


def settings_seed(settings: Any) -> object:
    return settings.get("seed") if isinstance(settings, Mapping) else getattr(settings, "seed", None)


def tokenizer_setting(tokenizer: Mapping[str, Any]) -> str | SentencePieceTraining:
    """The spec's tokenizer mapping as TextFilesSettings wants it: "bytes", a model file's path,
    or the SentencePiece training to do ({kind: sentencepiece, train: {vocab_size, ...}})."""
    kind = tokenizer.get("kind")
    if kind == "bytes":
        return "bytes"
    if kind == "sentencepiece" and tokenizer.get("model"):
        return str(tokenizer["model"])
    if kind == "sentencepiece" and isinstance(tokenizer.get("train"), Mapping):
        return SentencePieceTraining(**tokenizer["train"])
    if kind == "huggingface" and tokenizer.get("file"):
        return str(tokenizer["file"])
    raise ValueError(
        "tokenizer must be {kind: bytes}, {kind: sentencepiece, model: path}, {kind: sentencepiece, "
        f"train: {{vocab_size: n}}}} or {{kind: huggingface, file: path}}, got {dict(tokenizer)}"
    )


def make_settings(kind: str, settings: Mapping[str, Any] | Any | None, seed: int | None = None) -> Any:
    """The settings dataclass of `kind`, from a mapping, a dataclass or None (defaults). A "seed"
    key (the spec keeps the data seed in the source) must equal `seed` and is dropped."""
    if kind not in SETTINGS_TYPES:
        raise ValueError(f"unknown data source kind {kind!r}; expected one of {sorted(SETTINGS_TYPES)}")
    settings_type = SETTINGS_TYPES[kind]
    if isinstance(settings, settings_type):
        return settings
    if is_dataclass(settings) and not isinstance(settings, type):
        values: dict[str, Any] = asdict(settings)
    else:
        values = dict(settings or {})  # type: ignore[arg-type]  # a mapping here: a dataclass went above
    if values.get("kind", kind) != kind:
        raise ValueError(f"settings are for kind {values['kind']!r}, not {kind!r}")
    values.pop("kind", None)
    if "seed" in values and values.pop("seed") != seed:
        raise ValueError(f"settings carry seed {settings_seed(settings)} but build_source got seed {seed}")
    allowed = {field.name for field in fields(settings_type)}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"{kind} has no setting(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if isinstance(values.get("tokenizer"), Mapping):
        values["tokenizer"] = tokenizer_setting(values["tokenizer"])
    if "paths" in values and not isinstance(values["paths"], str):
        values["paths"] = tuple(str(path) for path in values["paths"])
    return settings_type(**values)


def build_source(
    kind: str,
    settings: Mapping[str, Any] | Any | None,
    dims: ModelDims,
    batch_size: int,
    seed: int,
    base_dir: Path,
    total_steps: int | None = None,
    process: tuple[int, int] = (0, 1),
) -> DataSource:
    """The data source of one run.

    kind: synthetic_images (vit), synthetic_tokens (t5, decoder), text_files (t5, decoder),
        image_arrays (vit), image_records (vit).
    settings: the kind's settings (see the *Settings dataclasses for every key and default).
    dims: the model's shape; batches are built to fit it (image size, classes, vocab, lengths).
    batch_size: training examples per step.
    seed: the data seed. It fixes the synthetic task, the stream, the split and the epoch order;
        keep it the same across a sweep so every run sees the same data.
    base_dir: the directory relative paths in the settings are resolved against (the spec's).
    total_steps: the run's length; finite sources check it up front against their size
        (refuse: UserError, warn: a DataRepeatWarning). None skips the up-front check; batches
        past the end are still refused or warned about when drawn.
    process: (this process's index, process count) under jax.distributed: sources read from the
        prepared cache return only this process's rows of each global batch (`process_local`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    resolved = make_settings(kind, settings, seed)
    if kind == "synthetic_images":
        return SyntheticImages(resolved, dims, batch_size, seed)
    if kind == "synthetic_tokens":
        return SyntheticTokens(resolved, dims, batch_size, seed)
    if kind == "text_files":
        return TextFiles(resolved, dims, batch_size, seed, base_dir, total_steps, process)
    if kind == "image_records":
        return ImageRecords(resolved, dims, batch_size, seed, base_dir, total_steps, process)
    return ImageArrays(resolved, dims, batch_size, seed, base_dir, total_steps)
