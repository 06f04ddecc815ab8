"""A SentencePiece model trained on the spec's own corpus, once, cached by content.

    path = trained_model(source_files, "jsonl", "text", SentencePieceTraining(8000, "unigram"))

The model lands at <cache root>/tokenizers/<key>.model, key = sha256(file contents, format,
field, training settings), so every run and sweep over the same corpus reuses it and a changed
file trains a new one. Training reads at most `sample_bytes` of text, spread evenly over the
files (the first lines of each file's share), streamed to SentencePiece's trainer as an iterator:
memory is bounded by the sample, not the corpus. The model uses T5's id layout (pad 0, eos 1,
unk 2, no bos), so its ids need no shift.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from engine.data.cache import atomic_write_text, cache_root, content_key, file_digest, memoised_digest
from engine.data.readers import TextFormat, read_blocks
from engine.errors import UserError

ModelType = Literal["unigram", "bpe", "char", "word"]
MAX_LINE_BYTES = 4096  # SentencePiece's own default max_sentence_length: longer lines are cut


@dataclass(frozen=True)
class SentencePieceTraining:
    """vocab_size: pieces of the trained model (PAD, EOS and UNK included).
    model_type: SentencePiece's algorithm. sample_bytes: text read for training at most."""

    vocab_size: int
    model_type: ModelType = "unigram"
    sample_bytes: int = 100_000_000


def training_lines(files: tuple[Path, ...], fmt: TextFormat, text_field: str, budget: int) -> Iterator[str]:
    """Non-empty lines of each file's documents, up to budget / len(files) bytes per file."""
    share = max(1, budget // len(files))
    for path in files:
        taken = 0
        for block, _ in read_blocks(path, fmt, text_field):
            for line in block.split(b"\n"):
                if not line.strip():
                    continue
                line = line[:MAX_LINE_BYTES]
                yield line.decode("utf-8", errors="replace")
                taken += len(line)
                if taken >= share:
                    break
            if taken >= share:
                break


def model_path(digests: list[str], fmt: TextFormat, text_field: str, training: SentencePieceTraining,
               root: Path) -> Path:
    """Where the model trained on files of these contents with these settings is cached."""
    key = content_key({"files": digests, "format": fmt, "field": text_field, "training": asdict(training)})
    return root / "tokenizers" / f"{key}.model"


def existing_model(files: tuple[Path, ...], fmt: TextFormat, text_field: str, training: SentencePieceTraining,
                   root: Path | None = None) -> Path | None:
    """The trained model if it is cached, found from digest memos alone (never reads the files)."""
    root = root or cache_root()
    digests = [memoised_digest(path, root) for path in files]
    if None in digests:
        return None
    path = model_path(digests, fmt, text_field, training, root)  # type: ignore[arg-type]
    return path if path.is_file() else None


def trained_model(
    files: tuple[Path, ...], fmt: TextFormat, text_field: str, training: SentencePieceTraining,
    root: Path | None = None,
) -> Path:
    """The cached model for this corpus and these settings, trained now if missing."""
    import sentencepiece

    root = root or cache_root()
    path = model_path([file_digest(p, root) for p in files], fmt, text_field, training, root)
    if path.is_file():
        return path
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.Train(
            sentence_iterator=training_lines(files, fmt, text_field, training.sample_bytes),
            model_writer=model,
            vocab_size=training.vocab_size,
            model_type=training.model_type,
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1,  # T5's layout: PAD and EOS where the engine wants them
            character_coverage=1.0,
            minloglevel=2,  # no training log on stderr
        )
    except RuntimeError as error:
        raise UserError(
            f"training a SentencePiece model of {training.vocab_size} pieces on {len(files)} file(s) failed: "
            f"{str(error).splitlines()[0]}"
        ) from error
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(model.getvalue())
    temporary.replace(path)
    atomic_write_text(path.with_suffix(".json"), json.dumps({"files": [p.as_posix() for p in files],
                                                              "training": asdict(training)}))
    return path
