"""Text -> token ids: bytes, a SentencePiece model, or a Hugging Face `tokenizers` JSON file.

Every tokenizer keeps PAD = 0 and EOS = 1 free for the token layouts (engine/data/layouts.py):
- bytes follow ByT5: PAD = 0, EOS = 1, UNK = 2, byte b -> b + 3, so 259 ids;
- a SentencePiece model keeps its own ids when it uses T5's layout (pad 0, eos 1; models the
  engine trains do), otherwise its ids are shifted up by 2;
- a Hugging Face tokenizer's ids are always shifted up by 2 (its specials are its own).

A `TokenizerRef` is what crosses into preparation workers (a picklable description, each worker
loads the model once); its `identity` (the model file's sha256) is part of every cache key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from engine.errors import UserError

BYTE_OFFSET = 3  # PAD, EOS, UNK come first (ByT5's layout)
SHIFT = 2  # ids of a tokenizer without T5's layout move up past PAD and EOS

TokenizerKind = Literal["bytes", "sentencepiece", "huggingface"]


class Tokenizer(Protocol):
    """Text bytes -> int32 token ids; `id_count` is one past the largest id it can emit."""

    id_count: int
    name: str

    def encode(self, data: bytes) -> np.ndarray: ...


class ByteTokenizer:
    id_count = 256 + BYTE_OFFSET
    name = "bytes"

    def encode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).astype(np.int32) + BYTE_OFFSET


class SentencePieceTokenizer:
    """A SentencePiece model file (ids as the module docstring says)."""

    def __init__(self, model_path: Path) -> None:
        import sentencepiece

        if not model_path.is_file():
            raise UserError(f"SentencePiece model {model_path} does not exist")
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.Load(str(model_path))
        except (OSError, RuntimeError) as error:
            raise UserError(f"{model_path} is not a SentencePiece model: {str(error).splitlines()[0]}") from error
        self._processor = processor
        t5_layout = processor.pad_id() == 0 and processor.eos_id() == 1
        self._shift = 0 if t5_layout else SHIFT
        self.id_count = processor.GetPieceSize() + self._shift
        self.name = f"sentencepiece:{model_path.name}"

    def encode(self, data: bytes) -> np.ndarray:
        ids = self._processor.EncodeAsIds(data.decode("utf-8", errors="replace"))
        return np.asarray(ids, dtype=np.int32) + self._shift

    def decode(self, ids: np.ndarray) -> str:
        return self._processor.DecodeIds([int(i) - self._shift for i in ids])


class HuggingFaceTokenizer:
    """A `tokenizers` JSON file (tokenizer.json), ids shifted up by 2; its own specials are not added."""

    def __init__(self, path: Path) -> None:
        import tokenizers

        if not path.is_file():
            raise UserError(f"Hugging Face tokenizer file {path} does not exist")
        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as error:  # the Rust side raises a bare Exception for any bad file
            raise UserError(f"{path} is not a Hugging Face tokenizers JSON file: {error}") from error
        self.id_count = self._tokenizer.get_vocab_size(with_added_tokens=True) + SHIFT
        self.name = f"huggingface:{path.name}"

    def encode(self, data: bytes) -> np.ndarray:
        encoding = self._tokenizer.encode(data.decode("utf-8", errors="replace"), add_special_tokens=False)
        return np.asarray(encoding.ids, dtype=np.int32) + SHIFT


@dataclass(frozen=True)
class TokenizerRef:
    """Which tokenizer, as a value: `path` is the model file (None for bytes)."""

    kind: TokenizerKind
    path: Path | None = None

    def load(self) -> Tokenizer:
        if self.kind == "bytes":
            return ByteTokenizer()
        assert self.path is not None
        if self.kind == "sentencepiece":
            return SentencePieceTokenizer(self.path)
        return HuggingFaceTokenizer(self.path)

    def identity(self) -> str:
        """What names this tokenizer in cache keys: its kind and its model file's content."""
        if self.path is None:
            return self.kind
        if not self.path.is_file():
            raise UserError(f"tokenizer file {self.path} does not exist")
        return f"{self.kind}:{stream_sha256(self.path)}"


def stream_sha256(path: Path, block: int = 1 << 20) -> str:
    """A file's sha256, read in blocks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_tokenizer(tokenizer: str, base_dir: Path) -> Tokenizer:
    """"bytes", or a path (relative to the spec's directory) to a SentencePiece .model file or a
    Hugging Face tokenizer .json file."""
    return tokenizer_ref(tokenizer, base_dir).load()


def tokenizer_ref(tokenizer: str, base_dir: Path) -> TokenizerRef:
    """The settings' tokenizer string as a TokenizerRef: "bytes", a .json file (Hugging Face) or
    any other path (SentencePiece)."""
    if tokenizer == "bytes":
        return TokenizerRef("bytes")
    path = base_dir / tokenizer
    return TokenizerRef("huggingface" if path.suffix == ".json" else "sentencepiece", path)
