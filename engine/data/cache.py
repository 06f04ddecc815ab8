"""The prepared data cache: raw files turned into token shards once, shared by every run.

    manifest = prepare_tokens(TextSource(files, "jsonl", "text", TokenizerRef("bytes")))
    manifest.tokens, manifest.documents, manifest.shards  # counts, no corpus read

Layout under `cache_root()` ($ENGINE_DATA_CACHE, else $XDG_CACHE_HOME/sparse-scaling-engine/data):
    digests/<stat key>      a file's sha256, memoised by (path, size, mtime, inode): an unchanged
                            file is hashed once, a touched one again
    shards/<key>.tokens     one raw file's tokens (uint16, or uint32 for vocabularies past 65,536),
                            an EOS after every document; <key>.json beside it is written last and
                            says it is complete. key = sha256(file content, format, field, tokenizer)
    sets/<key>.json         a source's manifest: its shards in order, token and document counts
Content-addressed: a changed file or tokenizer gives new keys, an unchanged one is never redone.
Files are tokenized in parallel worker processes (spawned: the parent may hold JAX's threads),
each streaming its file in bounded blocks to its shard; a shard is renamed into place only when
whole, so a killed preparation resumes from the shards it finished.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.data.layouts import EOS_ID
from engine.data.readers import TextFormat, read_blocks
from engine.data.tokenizers import TokenizerRef, stream_sha256
from engine.errors import UserError

CACHE_VERSION = 1  # bump when a shard's bytes would change for the same inputs
ProgressFn = Callable[[int], None]  # bytes of raw input finished


def cache_root() -> Path:
    override = os.environ.get("ENGINE_DATA_CACHE")
    if override:
        return Path(override)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sparse-scaling-engine" / "data"


def content_key(description: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def _digest_memo(path: Path, root: Path) -> Path:
    try:
        info = path.stat()
    except OSError as error:
        raise UserError(f"cannot read data file {path}: {error}") from error
    return root / "digests" / content_key({"path": str(path.resolve()), "size": info.st_size,
                                           "mtime_ns": info.st_mtime_ns, "inode": info.st_ino})


def memoised_digest(path: Path, root: Path) -> str | None:
    """The file's sha256 if this very file (same stat) was hashed before, without reading it."""
    memo = _digest_memo(path, root)
    return memo.read_text().strip() if memo.is_file() else None


def file_digest(path: Path, root: Path) -> str:
    """The file's sha256, streamed; memoised under root/digests by its stat identity."""
    known = memoised_digest(path, root)
    if known is not None:
        return known
    digest = stream_sha256(path)
    atomic_write_text(_digest_memo(path, root), digest)
    return digest


def token_dtype(id_count: int) -> np.dtype:
    return np.dtype(np.uint16) if id_count <= 1 << 16 else np.dtype(np.uint32)


@dataclass(frozen=True)
class TextSource:
    """Which raw text, read how, tokenized by what: everything a token cache depends on."""

    files: tuple[Path, ...]
    format: TextFormat
    text_field: str
    tokenizer: TokenizerRef


@dataclass(frozen=True)
class Shard:
    file: str  # the raw file, as named when prepared (for messages and provenance)
    sha256: str  # the raw file's content
    key: str  # shards/<key>.tokens
    tokens: int
    documents: int
    bytes: int  # raw input bytes (decompressed text for jsonl, the file's size otherwise)


@dataclass(frozen=True)
class TokenManifest:
    key: str
    tokenizer: str  # the tokenizer's identity
    id_count: int
    dtype: str
    shards: tuple[Shard, ...]

    @property
    def tokens(self) -> int:
        return sum(shard.tokens for shard in self.shards)

    @property
    def documents(self) -> int:
        return sum(shard.documents for shard in self.shards)

    def shard_path(self, root: Path, shard: Shard) -> Path:
        return root / "shards" / f"{shard.key}.tokens"

    def to_json(self) -> dict[str, object]:
        return {"key": self.key, "tokenizer": self.tokenizer, "id_count": self.id_count, "dtype": self.dtype,
                "tokens": self.tokens, "documents": self.documents, "shards": [asdict(s) for s in self.shards]}

    @classmethod
    def from_json(cls, data: dict) -> TokenManifest:
        return cls(data["key"], data["tokenizer"], data["id_count"], data["dtype"],
                   tuple(Shard(**shard) for shard in data["shards"]))


def shard_key(sha256: str, source: TextSource, tokenizer_identity: str) -> str:
    return content_key({"version": CACHE_VERSION, "content": sha256, "format": source.format,
                 "field": source.text_field, "tokenizer": tokenizer_identity})


def source_key(source: TextSource, root: Path) -> tuple[str, list[tuple[Path, str, str]]]:
    """The source's manifest key and, per file, (path, sha256, shard key): hashing only."""
    identity = source.tokenizer.identity()
    files = []
    for path in source.files:
        digest = file_digest(path, root)
        files.append((path, digest, shard_key(digest, source, identity)))
    return content_key({"shards": [key for _, _, key in files]}), files


def memoised_source_key(source: TextSource, root: Path) -> str | None:
    """The manifest key from digest memos alone, or None when a file was never hashed as it is
    now (then it is not prepared either): planning's way to the manifest without reading data."""
    digests = [memoised_digest(path, root) for path in source.files]
    known = [digest for digest in digests if digest is not None]
    if len(known) < len(digests):
        return None
    identity = source.tokenizer.identity()
    return content_key({"shards": [shard_key(digest, source, identity) for digest in known]})


def find_manifest(source: TextSource, root: Path | None = None) -> TokenManifest | None:
    """The finished manifest of this source, or None when it is not prepared yet (hashes files,
    memoised, but never tokenizes)."""
    root = root or cache_root()
    key, _ = source_key(source, root)
    path = root / "sets" / f"{key}.json"
    return TokenManifest.from_json(json.loads(path.read_text())) if path.is_file() else None


def prepare_tokens(
    source: TextSource,
    root: Path | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> TokenManifest:
    """The source's token cache, preparing whatever shards are missing (in parallel over files)."""
    root = root or cache_root()
    key, files = source_key(source, root)
    manifest_path = root / "sets" / f"{key}.json"
    if manifest_path.is_file():
        return TokenManifest.from_json(json.loads(manifest_path.read_text()))
    tokenizer = source.tokenizer.load()  # fail here, once, on a bad model file
    dtype = token_dtype(tokenizer.id_count)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    pending = [(path, shard) for path, _, shard in files if not (root / "shards" / f"{shard}.json").is_file()]
    if progress is not None:
        progress(sum(path.stat().st_size for path, _, shard in files if (path, shard) not in pending))
    run_per_file(tokenize_file, [(path, (path, source, shard, root, dtype.name)) for path, shard in pending],
                 workers, progress)
    shards = []
    for path, digest, shard in files:
        meta = json.loads((root / "shards" / f"{shard}.json").read_text())
        shards.append(Shard(path.as_posix(), digest, shard, meta["tokens"], meta["documents"], meta["bytes"]))
    manifest = TokenManifest(key, source.tokenizer.identity(), tokenizer.id_count, dtype.name, tuple(shards))
    atomic_write_text(manifest_path, json.dumps(manifest.to_json(), indent=1))
    return manifest


def run_per_file(
    task: Callable[..., object], calls: Sequence[tuple[Path, tuple[object, ...]]], workers: int | None,
    progress: ProgressFn | None,
) -> None:
    """task(*arguments) for each (raw file, arguments), in parallel worker processes when there
    are several files and cores; progress is advanced by each file's size as it finishes."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(calls)))
    if workers == 1:
        for path, arguments in calls:
            task(*arguments)
            if progress is not None:
                progress(path.stat().st_size)
        return
    # spawn, not fork: a forked child of a process running JAX's threads can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(task, *arguments): path for path, arguments in calls}
        for future in as_completed(futures):
            future.result()  # a worker's UserError is re-raised here
            if progress is not None:
                progress(futures[future].stat().st_size)


def tokenize_file(path: Path, source: TextSource, shard: str, root: Path, dtype: str) -> None:
    """One raw file -> shards/<shard>.tokens (+ .json, written last), streamed block by block."""
    tokenizer = source.tokenizer.load()
    eos = np.array([EOS_ID], dtype=dtype)
    tokens = documents = raw_bytes = 0
    target = root / "shards" / f"{shard}.tokens"
    with tempfile.NamedTemporaryFile("wb", dir=target.parent, delete=False, suffix=".tmp") as handle:
        try:
            for block, document_ends in read_blocks(path, source.format, source.text_field):
                ids = tokenizer.encode(block).astype(dtype)
                ids.tofile(handle)
                tokens += len(ids)
                raw_bytes += len(block)
                if document_ends:
                    eos.tofile(handle)
                    tokens += 1
                    documents += 1
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    os.replace(handle.name, target)
    meta = {"file": path.as_posix(), "tokens": tokens, "documents": documents, "bytes": raw_bytes, "dtype": dtype}
    atomic_write_text(target.with_suffix(".json"), json.dumps(meta))


class ShardReader:
    """Positioned reads (pread) from shard files, opened on first use. Not a memory map: pages a
    map touches count as the process's resident memory until unmapped, so random reads over a
    large corpus would grow it towards the corpus size (measured: 1.8 GB after 2,048 random
    examples of a 1.2 GB cache); a read's pages stay in the OS page cache instead."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._descriptors: dict[int, int] = {}

    def read(self, index: int, dtype: np.dtype, first: int, count: int) -> np.ndarray:
        """Items first..first+count-1 of shard `index` as an array of `dtype`."""
        if index not in self._descriptors:
            path = self._paths[index]
            try:
                self._descriptors[index] = os.open(path, os.O_RDONLY)
            except OSError as error:
                raise UserError(f"prepared data shard {path} is missing; run `engine data prepare` again") from error
        size = dtype.itemsize
        data = os.pread(self._descriptors[index], count * size, first * size)
        if len(data) != count * size:
            raise UserError(f"prepared data shard {self._paths[index]} is truncated; delete it and prepare again")
        return np.frombuffer(data, dtype=dtype)

    def __del__(self) -> None:
        for descriptor in self._descriptors.values():
            os.close(descriptor)


class TokenStream:
    """The manifest's shards as one token sequence, read by position; example i is tokens
    [i * length, (i + 1) * length) of it, across shard boundaries (files are concatenated, an EOS
    after each document, the ragged tail dropped)."""

    def __init__(self, manifest: TokenManifest, length: int, root: Path | None = None) -> None:
        root = root or cache_root()
        self.length = length
        self._reader = ShardReader([manifest.shard_path(root, shard) for shard in manifest.shards])
        self._dtype = np.dtype(manifest.dtype)
        self._starts = np.cumsum([0] + [shard.tokens for shard in manifest.shards])
        self.examples = int(self._starts[-1]) // length

    def __len__(self) -> int:
        return self.examples

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.examples:
            raise IndexError(f"example {index} of {self.examples}")
        first, end = index * self.length, (index + 1) * self.length
        pieces = []
        shard = int(np.searchsorted(self._starts, first, side="right")) - 1
        while first < end:
            stop = min(end, int(self._starts[shard + 1]))
            offset = int(self._starts[shard])
            if stop > first:  # an empty shard (a file without documents) is never opened
                pieces.append(self._reader.read(shard, self._dtype, first - offset, stop - first))
            first, shard = stop, shard + 1
        row = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return row.astype(np.int32)
