"""How raw token rows become a language model's batch: decoder windows or T5 span corruption.

Token id conventions shared by every token source: PAD = 0, EOS = 1, content ids above those, and
for T5 the sentinels count down from vocab_size - 1 (T5's extra ids), so content must stay below
`vocab_size - sentinels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data.base import Batch
from engine.data.span_corruption import EOS_ID, PAD_ID, SpanCounts, raw_length_for_inputs, span_corrupt
from engine.errors import UserError
from engine.planning.sizing import ModelDims

__all__ = ["EOS_ID", "PAD_ID", "TokenLayout", "token_layout"]


@dataclass(frozen=True)
class TokenLayout:
    """The batch format of one language family at fixed lengths."""

    family: str  # "decoder" or "t5"
    vocab_size: int
    seq_len: int  # decoder context; t5 encoder input length
    target_len: int  # t5 only: decoder length (targets padded with PAD up to it)
    span_counts: SpanCounts | None  # t5 only

    @property
    def raw_length(self) -> int:
        """Raw tokens per example: seq_len + 1 for a decoder (inputs and shifted labels), the
        T5 raw chunk whose corruption is exactly seq_len long for t5."""
        return self.span_counts.raw_length if self.span_counts else self.seq_len + 1

    @property
    def sentinels(self) -> int:
        return self.span_counts.noise_spans if self.span_counts else 0

    @property
    def content_limit(self) -> int:
        """Content token ids must be below this (the sentinels live at and above it)."""
        return self.vocab_size - self.sentinels

    def format(self, rng: np.random.Generator, raw: np.ndarray) -> Batch:
        """Raw rows [B, raw_length] -> the family's batch. `rng` drives T5's noise mask."""
        if self.span_counts is None:
            return {"tokens": raw.astype(np.int32)}
        return span_corrupt(rng, raw, self.vocab_size, self.target_len)

    def check_content_fits(self, needed_ids: int, what: str) -> None:
        """Content ids 0..needed_ids-1 (including PAD/EOS) must not collide with sentinels."""
        if needed_ids > self.content_limit:
            raise UserError(
                f"{what} needs token ids 0..{needed_ids - 1}"
                + (f" plus {self.sentinels} T5 sentinels" if self.sentinels else "")
                + f", so vocab_size must be at least {needed_ids + self.sentinels};"
                f" the model has vocab_size {self.vocab_size}"
            )


def token_layout(dims: ModelDims) -> TokenLayout:
    """The layout of a t5 or decoder model; T5 targets must hold the corrupted spans."""
    if dims.family == "decoder":
        return TokenLayout("decoder", dims.vocab_size, dims.seq_len, 0, None)
    if dims.family == "t5":
        counts = raw_length_for_inputs(dims.seq_len)
        if dims.target_len < counts.targets_length:
            raise UserError(
                f"t5 span corruption of {counts.raw_length} raw tokens into {dims.seq_len} input "
                f"tokens needs target_len >= {counts.targets_length}; the model has target_len "
                f"{dims.target_len}"
            )
        return TokenLayout("t5", dims.vocab_size, dims.seq_len, dims.target_len, counts)
    raise UserError(f"token data needs a t5 or decoder model, not {dims.family!r}")
