"""Text -> token ids: a byte-level tokenizer (always available) and SentencePiece (optional).

Byte ids follow ByT5: PAD = 0, EOS = 1, UNK = 2, byte b -> b + 3, so 259 ids before any T5
sentinels. SentencePiece is optional; without the package a SentencePiece tokenizer is a UserError
saying how to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from engine.errors import UserError

BYTE_OFFSET = 3  # PAD, EOS, UNK come first (ByT5's layout)


class Tokenizer(Protocol):
    """Raw file bytes -> int32 token ids; `id_count` is one past the largest id it can emit."""

    id_count: int
    name: str

    def encode(self, data: bytes) -> np.ndarray: ...


class ByteTokenizer:
    id_count = 256 + BYTE_OFFSET
    name = "bytes"

    def encode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).astype(np.int32) + BYTE_OFFSET


class SentencePieceTokenizer:
    """A SentencePiece model file. Ids are the model's own when it uses T5's layout (pad 0,
    eos 1); otherwise they are shifted up by 2 so PAD and EOS stay 0 and 1."""

    def __init__(self, model_path: Path) -> None:
        try:
            import sentencepiece  # optional dependency
        except ImportError as error:
            raise UserError(
                f"tokenizer {model_path} is a SentencePiece model, but the sentencepiece package "
                "is not installed (pip install sentencepiece)"
            ) from error
        if not model_path.is_file():
            raise UserError(f"SentencePiece model {model_path} does not exist")
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.Load(str(model_path))
        except (OSError, RuntimeError) as error:
            raise UserError(f"{model_path} is not a SentencePiece model: {error}") from error
        self._processor = processor
        t5_layout = processor.pad_id() == 0 and processor.eos_id() == 1
        self._shift = 0 if t5_layout else 2
        self.id_count = processor.GetPieceSize() + self._shift
        self.name = f"sentencepiece:{model_path.name}"

    def encode(self, data: bytes) -> np.ndarray:
        ids = self._processor.EncodeAsIds(data.decode("utf-8", errors="replace"))
        return np.asarray(ids, dtype=np.int32) + self._shift


def make_tokenizer(tokenizer: str, base_dir: Path) -> Tokenizer:
    """"bytes", or a path (relative to the spec's directory) to a SentencePiece .model file."""
    if tokenizer == "bytes":
        return ByteTokenizer()
    return SentencePieceTokenizer(base_dir / tokenizer)
