"""How many examples a run's file source holds against how many the run needs, before training.

    budget = data_budget(run)       # None for built-in synthetic sources (endless)
    budget.available, budget.needed, budget.epochs, budget.exact

Exact counts come from the prepared cache's manifest (engine/data/cache.py) when the source is
prepared: found through the digest memos that preparation leaves, so planning never reads the
corpus. Otherwise they are estimated from file sizes: a byte per token for the bytes tokenizer
(exact for plain text files but for the EOS per file), BYTES_PER_TOKEN for subword tokenizers;
images are counted from the arrays' headers or the Parquet footers. Pure Python: no JAX.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engine.errors import UserError
from engine.planning.plan import RunPlan
from spec.data import ImageArrays, ImageRecords, TextFiles

BYTES_PER_TOKEN = 4.0  # a subword vocabulary on English text; only for estimates before preparation


@dataclass(frozen=True)
class DataBudget:
    label: str  # the source, for messages
    available: int  # training examples (validation held out)
    needed: int  # steps x batch_size, past any data the run continues from
    exact: bool  # from the cache manifest (or array headers), not estimated from file sizes

    @property
    def epochs(self) -> float:
        return self.needed / max(self.available, 1)

    def describe(self) -> str:
        how = "" if self.exact else " (estimated from file sizes; `engine data prepare` counts exactly)"
        return (f"{self.label} holds {self.available} training examples{how} but the run needs "
                f"{self.needed} ({self.epochs:.2f} epochs)")


def data_budget(run: RunPlan) -> DataBudget | None:
    """The run's file data against its needs; None for synthetic sources or missing files
    (plain planning does not require the data to be on this machine)."""
    source = run.spec.data.source
    needed = (run.data_offset + run.steps) * run.batch_size
    try:
        if isinstance(source, TextFiles):
            return _text_budget(source, run, needed)
        if isinstance(source, ImageArrays | ImageRecords):
            return _image_budget(source, run, needed)
    except UserError:
        return None
    return None


def _files(paths: list[str], spec_dir: Path) -> tuple[Path, ...]:
    from engine.data.files import resolve_paths

    return tuple(resolve_paths(paths, spec_dir))


def _label(files: tuple[Path, ...], kind: str) -> str:
    return files[0].as_posix() if len(files) == 1 else f"{len(files)} {kind} files under {files[0].parent}"


def _text_budget(source: TextFiles, run: RunPlan, needed: int) -> DataBudget:
    from engine.data.build import make_settings
    from engine.data.layouts import token_layout
    from engine.data.text import eval_count
    from engine.planning.plan import source_settings

    settings = make_settings("text_files", source_settings(run.spec.data), source.seed)
    files = _files(source.paths, run.spec_dir)
    raw_length = token_layout(run.dims).raw_length
    tokens = _prepared_tokens(settings, run.spec_dir)
    exact = tokens is not None
    if tokens is None:
        size = sum(path.stat().st_size for path in files)
        per_token = 1.0 if source.tokenizer.kind == "bytes" else BYTES_PER_TOKEN
        tokens = int(size / per_token) + len(files)
    total = tokens // raw_length
    available = max(0, total - eval_count(total, settings))
    return DataBudget(_label(files, "text"), available, needed, exact)


def _prepared_tokens(settings: object, spec_dir: Path) -> int | None:
    """The manifest's token count when this source is prepared, found without reading the corpus."""
    from engine.data.cache import cache_root, memoised_source_key
    from engine.data.text import text_source

    source = text_source(settings, spec_dir, train=False)  # type: ignore[arg-type]
    if source is None:
        return None
    key = memoised_source_key(source, cache_root())
    if key is None:
        return None
    manifest = cache_root() / "sets" / f"{key}.json"
    return json.loads(manifest.read_text())["tokens"] if manifest.is_file() else None


def _image_budget(source: ImageArrays | ImageRecords, run: RunPlan, needed: int) -> DataBudget:
    from engine.data.images import image_eval_count

    files = _files(source.paths, run.spec_dir)
    total = _count_images_cached(files, source.kind, getattr(source, "label_field", ""))
    evals = image_eval_count(total, source)
    return DataBudget(_label(files, "image"), max(0, total - evals), needed, True)


@lru_cache(maxsize=64)
def _count_images_cached(files: tuple[Path, ...], kind: str, label_field: str) -> int:
    from engine.data.images import count_images

    return count_images(files, kind)
