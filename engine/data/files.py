"""The user's own image arrays with labels (vit), and how data paths are resolved.

Text files are read from the prepared cache (engine/data/text.py).

Paths are resolved relative to the spec's directory (`base_dir`). The arrays are finite: a seeded
split holds out the validation examples, training steps take fixed slices of per-epoch
permutations (engine/data/finite.py), and running past one epoch is refused or warned about, as the
spec says. Arrays are read with allow_pickle=False (.npy memory-mapped, an .npz read whole); every
problem is a UserError naming the file.
"""

from __future__ import annotations

import glob
import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.data.base import Batch, fingerprint_of
from engine.data.finite import EpochOrder, OnExhausted, check_budget, hold_out
from engine.data.prefetch import prefetched
from engine.data.tokenizers import stream_sha256
from engine.errors import UserError
from engine.planning.sizing import ModelDims

DEFAULT_FILE_EVAL_FRACTION = 0.05
DEFAULT_FILE_EVAL_BATCH_SIZE = 64


@dataclass(frozen=True)
class ImageArraysSettings:
    """Settings of `image_arrays` (vit).

    paths: one .npz with arrays `images` and `labels`, or two .npy files (images, then labels).
        images: [N, H, W, C] (or [N, H, W] for one channel), uint8 (scaled to [0, 1]) or float.
        labels: int class ids [N] (one-hot), multi-hot 0/1 [N, num_classes], or int class-id
        lists [N, K] padded with -1 (multi-hot).
    on_exhausted, eval_fraction, eval_batch_size: as for text_files (engine/data/text.py).
    """

    paths: tuple[str, ...]
    on_exhausted: OnExhausted = "refuse"
    eval_fraction: float = DEFAULT_FILE_EVAL_FRACTION
    eval_batch_size: int = DEFAULT_FILE_EVAL_BATCH_SIZE


def resolve_paths(patterns: tuple[str, ...] | list[str] | str, base_dir: Path) -> list[Path]:
    """Every file named by the patterns, sorted per pattern; a pattern matching nothing is an error."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    if not patterns:
        raise UserError("data paths are empty: name at least one file")
    files: list[Path] = []
    for pattern in patterns:
        path = base_dir / pattern
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            matches = [p for p in matches if p.is_file()]
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            matches = [path]
        else:
            raise UserError(f"data file {path} does not exist")
        if not matches:
            raise UserError(f"data path {path} matches no files")
        files.extend(matches)
    return files


def _content_hash(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(bytes.fromhex(stream_sha256(file)))
    return digest.hexdigest()[:16]


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"images", "labels"} - set(archive.files)
            if missing:
                raise UserError(
                    f"{path} lacks array(s) {sorted(missing)}; it has {sorted(archive.files)}"
                )
            return archive["images"], archive["labels"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise UserError(f"cannot read {path} as an .npz archive without pickle: {error}") from error


def _load_npy(path: Path) -> np.ndarray:
    """A memory map of the array: batches read only their rows (an .npz is read whole)."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"cannot read {path} as an .npy array without pickle: {error}") from error


def load_image_arrays(files: list[Path]) -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels, name) from one .npz or an (images .npy, labels .npy) pair."""
    if len(files) == 1 and files[0].suffix == ".npz":
        images, labels = _load_npz(files[0])
        return images, labels, files[0].as_posix()
    if len(files) == 2 and all(f.suffix == ".npy" for f in files):
        return _load_npy(files[0]), _load_npy(files[1]), files[0].as_posix()
    raise UserError(
        f"image_arrays wants one .npz or two .npy files (images, labels); got {[f.as_posix() for f in files]}"
    )


def normalise_images(images: np.ndarray, dims: ModelDims, name: str) -> np.ndarray:
    """[N, H, W, C] in the model's shape; [N, H, W] allowed for one channel."""
    if images.ndim == 3 and dims.channels == 1:
        images = images[..., None]
    expected = (dims.image_size, dims.image_size, dims.channels)
    if images.ndim != 4 or images.shape[1:] != expected:
        raise UserError(f"{name}: images have shape {images.shape}, the model wants [N, {', '.join(map(str, expected))}]")
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise UserError(f"{name}: images have dtype {images.dtype}, expected uint8 or float")
    return images


def label_kind(labels: np.ndarray, count: int, classes: int, name: str) -> str:
    """How the labels are written, checked once over all of them (labels are small next to the
    images): "multi_hot" [N, classes] of 0/1, or "ids" (class ids [N], or [N, K] padded with -1)."""
    if len(labels) != count:
        raise UserError(f"{name}: {count} images but {len(labels)} labels")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
            or labels.dtype == np.bool_):
        raise UserError(f"{name}: labels have dtype {labels.dtype}, expected integers or 0/1 floats")
    values = np.asarray(labels)
    if values.ndim == 2 and values.shape[1] == classes and bool(np.isin(values, (0, 1)).all()):
        return "multi_hot"
    if not np.issubdtype(values.dtype, np.integer) or values.ndim not in (1, 2):
        raise UserError(
            f"{name}: labels of shape {labels.shape} and dtype {labels.dtype} are neither class ids "
            f"[N] / [N, K] nor multi-hot [N, {classes}] of 0/1"
        )
    if (values >= classes).any():
        raise UserError(f"{name}: label id {int(values.max())} is out of range for {classes} classes")
    return "ids"


def multi_hot_rows(labels: np.ndarray, kind: str, classes: int) -> np.ndarray:
    """float32 [rows, classes] 0/1 for some rows of labels of a checked `kind`."""
    if kind == "multi_hot":
        return np.asarray(labels, dtype=np.float32)
    ids = np.asarray(labels).reshape(len(labels), -1)
    valid = ids >= 0
    out = np.zeros((len(labels), classes), dtype=np.float32)
    rows = np.broadcast_to(np.arange(len(labels))[:, None], ids.shape)
    out[rows[valid], ids[valid]] = 1.0
    return out


def multi_hot_labels(labels: np.ndarray, count: int, classes: int, name: str) -> np.ndarray:
    """float32 [N, classes] 0/1 from class ids [N], multi-hot [N, classes] or id lists [N, K]
    padded with -1 (all rows at once: for small label sets and tests)."""
    return multi_hot_rows(labels, label_kind(labels, count, classes, name), classes)


class ImageArrays:
    """Labelled images from the user's arrays."""

    units_per_example = 1

    def __init__(
        self,
        settings: ImageArraysSettings,
        dims: ModelDims,
        batch_size: int,
        seed: int,
        base_dir: Path,
        total_steps: int | None = None,
    ) -> None:
        if dims.family != "vit":
            raise UserError(f"image_arrays feeds vit models, not {dims.family!r}")
        files = resolve_paths(settings.paths, base_dir)
        images, labels, self.name = load_image_arrays(files)
        self.images = normalise_images(images, dims, self.name)  # .npy: a memory map, read per batch
        self.labels = labels
        self._label_kind = label_kind(labels, len(self.images), dims.num_classes, self.name)
        self._classes = dims.num_classes
        split = hold_out(len(self.images), settings.eval_fraction, settings.eval_batch_size, seed, self.name)
        self.settings = settings
        self.seed = seed
        self.examples_per_step = batch_size
        self.available_examples = len(split.train)
        self._eval_indices = split.eval
        self._order = EpochOrder(split.train, batch_size, seed, settings.on_exhausted, self.name)
        check_budget(self.name, self.available_examples,
                     None if total_steps is None else total_steps * batch_size, settings.on_exhausted)
        self.fingerprint = fingerprint_of(
            {"kind": "image_arrays", "seed": seed, "settings": asdict(settings), "content": _content_hash(files)}
        )

    def _examples(self, indices: np.ndarray) -> Batch:
        images = self.images[indices]
        # uint8 pixels are scaled to [0, 1]; float images are taken as they are.
        scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
        return {"images": images.astype(np.float32) * np.float32(scale),
                "labels": multi_hot_rows(self.labels[indices], self._label_kind, self._classes)}

    def batch(self, step: int) -> Batch:
        return self._examples(self._order.indices(step))

    def batches(self, start: int, stop: int) -> Iterator[Batch]:
        """Steps start..stop-1 in order, read ahead (from the memory map) while the caller trains."""
        return prefetched(self.batch, start, stop)

    def eval_batches(self) -> list[Batch]:
        size = self.settings.eval_batch_size
        return [self._examples(self._eval_indices[s : s + size]) for s in range(0, len(self._eval_indices), size)]
