"""The user's images as records of encoded PNG/JPEG bytes with labels (vit), via the prepared cache.

Parquet files with a column of encoded images (binary, or a struct with a `bytes` field as
Hugging Face datasets write it) and a column of labels (a class id or a list of class ids) are
prepared once per file into shards of the cache (engine/data/cache.py's root, content-addressed
the same way): shards/<key>.images (the encoded bytes back to back), .offsets (int64, one more
than images), .labels and .label_offsets (int32 ids, int64), and .json written last. Training
reads records by position (pread) under the keyed shuffle (engine/data/shuffle.py);
decoding (and resizing to the model's image size) happens in Grain's prefetch threads, where PIL
releases the GIL.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.data.base import Batch, fingerprint_of
from engine.data.cache import (
    ProgressFn,
    ShardReader,
    atomic_write_text,
    cache_root,
    content_key,
    file_digest,
    run_per_file,
)
from engine.data.finite import OnExhausted, check_budget
from engine.data.prefetch import prefetched
from engine.data.shuffle import ExampleOrder, process_share
from engine.errors import UserError
from engine.planning.sizing import ModelDims

IMAGE_CACHE_VERSION = 1
READ_ROWS = 256


@dataclass(frozen=True)
class ImageRecordsSettings:
    """Settings of `image_records` (vit); see spec.data.ImageRecords for each field."""

    paths: tuple[str, ...]
    image_field: str = "image"
    label_field: str = "label"
    on_exhausted: OnExhausted = "refuse"
    eval_fraction: float = 0.05
    eval_batch_size: int = 64
    max_eval_examples: int = 2048


class EvalSplit(Protocol):
    """The validation settings of an image source (settings dataclass or spec model)."""

    @property
    def eval_fraction(self) -> float: ...

    @property
    def eval_batch_size(self) -> int: ...


def image_eval_count(total: int, settings: EvalSplit) -> int:
    """Validation images: the eval fraction in whole batches, at least one batch (capped by
    max_eval_examples where the source has it: image_records, not image_arrays)."""
    size = settings.eval_batch_size
    share = max(size, int(total * settings.eval_fraction) // size * size)
    cap = getattr(settings, "max_eval_examples", None)
    return share if cap is None else max(size, min(share, cap // size * size))


def count_images(files: tuple[Path, ...], kind: str) -> int:
    """Images in the files from headers and footers only (planning)."""
    if kind == "image_records":
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    from engine.data.files import load_image_arrays

    images, _, _ = load_image_arrays(list(files))
    return len(images)


def _image_bytes(value: object, where: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict) and isinstance(value.get("bytes"), bytes):
        return value["bytes"]
    raise UserError(f"{where}: expected encoded image bytes (or a struct with `bytes`), got {type(value).__name__}")


def _label_ids(value: object, where: str) -> list[int]:
    ids = value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise UserError(f"{where}: a label must be a class id or a list of class ids, got {value!r}")
    return ids  # type: ignore[return-value]


def prepare_image_file(path: Path, settings: ImageRecordsSettings, key: str, root: Path) -> None:
    """One Parquet file -> its image shard (.json with its counts last), a record batch at a time."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pyarrow.ArrowException) as error:
        raise UserError(f"cannot read {path} as Parquet: {error}") from error
    missing = {settings.image_field, settings.label_field} - set(parquet.schema_arrow.names)
    if missing:
        raise UserError(f"{path} has no column(s) {sorted(missing)}; it has {parquet.schema_arrow.names}")
    base = root / "shards" / key
    base.parent.mkdir(parents=True, exist_ok=True)
    parts = {name: tempfile.NamedTemporaryFile("wb", dir=base.parent, delete=False, suffix=".tmp")
             for name in ("images", "offsets", "labels", "label_offsets")}
    count = label_max = 0
    offset = label_offset = 0
    try:
        np.array([0], np.int64).tofile(parts["offsets"])
        np.array([0], np.int64).tofile(parts["label_offsets"])
        columns = [settings.image_field, settings.label_field]
        for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=columns):
            images, labels = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            for image, label in zip(images, labels, strict=True):
                where = f"{path}: row {count}"
                data, ids = _image_bytes(image, where), _label_ids(label, where)
                parts["images"].write(data)
                offset += len(data)
                label_offset += len(ids)
                np.array([offset], np.int64).tofile(parts["offsets"])
                np.array(ids, np.int32).tofile(parts["labels"])
                np.array([label_offset], np.int64).tofile(parts["label_offsets"])
                label_max = max([label_max, *ids])
                count += 1
    except BaseException:
        for handle in parts.values():
            handle.close()
            os.unlink(handle.name)
        raise
    for name, handle in parts.items():
        handle.close()
        os.replace(handle.name, base.with_suffix(f".{name}"))
    meta = {"file": path.as_posix(), "images": count, "label_max": label_max}
    atomic_write_text(base.with_suffix(".json"), json.dumps(meta))


class ImageShards:
    """Prepared image shards as one random-access sequence of (encoded bytes, label ids), read by
    position (engine/data/cache.py ShardReader: no memory map, so memory stays flat)."""

    def __init__(self, keys: list[str], counts: list[int], root: Path) -> None:
        bases = [root / "shards" / key for key in keys]
        self._parts = {suffix: ShardReader([base.with_suffix(suffix) for base in bases])
                       for suffix in (".images", ".offsets", ".labels", ".label_offsets")}
        self._starts = np.cumsum([0, *counts])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> tuple[bytes, np.ndarray]:
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        local = index - int(self._starts[shard])
        start, stop = self._parts[".offsets"].read(shard, np.dtype(np.int64), local, 2)
        first, last = self._parts[".label_offsets"].read(shard, np.dtype(np.int64), local, 2)
        image = self._parts[".images"].read(shard, np.dtype(np.uint8), int(start), int(stop - start))
        labels = self._parts[".labels"].read(shard, np.dtype(np.int32), int(first), int(last - first))
        return image.tobytes(), labels


def prepare_images(
    settings: ImageRecordsSettings, files: tuple[Path, ...], root: Path | None = None, workers: int | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    """The image source's manifest, preparing the shards that are missing (in parallel over files)."""
    root = root or cache_root()
    keyed = []
    for path in files:
        digest = file_digest(path, root)
        keyed.append((path, digest, content_key({"version": IMAGE_CACHE_VERSION, "content": digest,
                                                 "image": settings.image_field, "label": settings.label_field})))
    pending = [(path, (path, settings, key, root)) for path, _, key in keyed
               if not (root / "shards" / f"{key}.json").is_file()]
    run_per_file(prepare_image_file, pending, workers, progress)
    shards = [{"file": path.as_posix(), "sha256": digest, "key": key,
               **json.loads((root / "shards" / f"{key}.json").read_text())} for path, digest, key in keyed]
    manifest = {"key": content_key({"shards": [s["key"] for s in shards]}), "images": sum(s["images"] for s in shards),
                "label_max": max(s["label_max"] for s in shards), "shards": shards}
    atomic_write_text(root / "sets" / f"{manifest['key']}.json", json.dumps(manifest, indent=1))
    return manifest


def decode_image(data: bytes, dims: ModelDims, where: str) -> np.ndarray:
    """Encoded bytes -> [H, W, C] uint8 at the model's image size (converted and resized only
    when the image is not already that: a conversion costs as much as the decode)."""
    from PIL import Image, UnidentifiedImageError

    mode = "L" if dims.channels == 1 else "RGB"
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        if image.mode != mode:
            image = image.convert(mode)
        if image.size != (dims.image_size, dims.image_size):
            image = image.resize((dims.image_size, dims.image_size), Image.Resampling.BILINEAR)
        pixels = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UserError(f"{where}: not a decodable image: {error}") from error
    return pixels.reshape(dims.image_size, dims.image_size, dims.channels)


class ImageRecords:
    """Labelled images decoded from the prepared record cache."""

    units_per_example = 1

    def __init__(
        self,
        settings: ImageRecordsSettings,
        dims: ModelDims,
        batch_size: int,
        seed: int,
        base_dir: Path,
        total_steps: int | None = None,
        process: tuple[int, int] = (0, 1),
    ) -> None:
        from engine.data.files import resolve_paths

        if dims.family != "vit":
            raise UserError(f"image_records feeds vit models, not {dims.family!r}")
        files = tuple(resolve_paths(settings.paths, base_dir))
        self.name = files[0].as_posix() if len(files) == 1 else f"{len(files)} image files under {files[0].parent}"
        self.manifest = prepare_images(settings, files)
        if self.manifest["label_max"] >= dims.num_classes:
            raise UserError(f"{self.name}: label id {self.manifest['label_max']} is out of range for "
                            f"{dims.num_classes} classes")
        self.records = ImageShards([s["key"] for s in self.manifest["shards"]],
                                   [s["images"] for s in self.manifest["shards"]], cache_root())
        total = len(self.records)
        evals = image_eval_count(total, settings)
        if total - evals < 1:
            raise UserError(f"{self.name}: {total} images are too few to hold out {evals} for validation and still train")
        self.order = ExampleOrder(total, evals, seed)
        self.settings, self.dims, self.seed = settings, dims, seed
        self.examples_per_step = batch_size
        self.available_examples = self.order.train_examples
        self._index, self._count = process
        if batch_size % self._count:
            raise UserError(f"batch_size {batch_size} does not split over {self._count} processes")
        self.process_local = self._count > 1
        self._warned = False
        check_budget(self.name, self.available_examples,
                     None if total_steps is None else total_steps * batch_size, settings.on_exhausted)
        self.fingerprint = fingerprint_of({"kind": "image_records", "seed": seed, "settings": asdict(settings),
                                           "content": self.manifest["key"], "image_size": dims.image_size})

    def _examples(self, indices: list[int]) -> Batch:
        images = np.empty((len(indices), self.dims.image_size, self.dims.image_size, self.dims.channels), np.uint8)
        labels = np.zeros((len(indices), self.dims.num_classes), np.float32)
        for row, index in enumerate(indices):
            data, ids = self.records[index]
            images[row] = decode_image(data, self.dims, f"{self.name}: image {index}")
            labels[row, ids] = 1.0
        # pixels scaled to [0, 1] once per batch, as image_arrays scales uint8 arrays
        return {"images": images.astype(np.float32) * np.float32(1.0 / 255.0), "labels": labels}

    def batch(self, step: int) -> Batch:
        positions = process_share(step, self.examples_per_step, self._index, self._count)
        end = (step + 1) * self.examples_per_step
        if end > self.available_examples:
            self._on_repeat(end)
        return self._examples([self.order.train_example(g) for g in positions])

    def batches(self, start: int, stop: int) -> Iterator[Batch]:
        """Steps start..stop-1 in order, read ahead in a background thread while the caller trains."""
        return prefetched(self.batch, start, stop)

    def eval_batches(self) -> list[Batch]:
        size = self.settings.eval_batch_size
        return [self._examples([self.order.eval_example(i) for i in range(start, start + size)])
                for start in range(0, self.order.eval_examples, size)]

    def _on_repeat(self, needed: int) -> None:
        if not self._warned:  # check_budget refuses (every time) or warns (said once)
            check_budget(self.name, self.available_examples, needed, self.settings.on_exhausted)
            self._warned = True
