"""The data files a run reads, with their sha256, for drift checks and provenance.

Digests come from the prepared cache's memo (engine/data/cache.py file_digest): a file is read
once to hash it, then found by its stat identity, so checking a resumed run of a large corpus
does not read the corpus again.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.data.cache import cache_root, file_digest
from engine.data.files import resolve_paths
from spec.data import HuggingfaceTokenizer, ImageArrays, ImageRecords, SentencepieceTokenizer, TextFiles


def data_file_digests(source: object, spec_dir: Path) -> dict[str, str]:
    """Every file the source reads (data paths expanded, a tokenizer's model file), named
    relative to the spec's directory, with its sha256. Empty for built-in synthetic data."""
    files: list[Path] = []
    if isinstance(source, TextFiles | ImageArrays | ImageRecords):
        files += resolve_paths(source.paths, spec_dir)
    if isinstance(source, TextFiles):
        tokenizer = source.tokenizer
        if isinstance(tokenizer, SentencepieceTokenizer) and tokenizer.model is not None:
            files.append(spec_dir / tokenizer.model)
        if isinstance(tokenizer, HuggingfaceTokenizer):
            files.append(spec_dir / tokenizer.file)
    root = cache_root()
    return {os.path.relpath(file, spec_dir): file_digest(file, root) for file in files}
