"""`data:` where examples come from and how many are used (DESIGN.md section 2).

The budget has exactly one unit: `steps` at `batch_size` examples per step. D is reported by the
planner in examples (vit) or tokens (t5 and decoder: seq_len tokens per example, the paper's
D = steps x 128 x 512 for T5). Finite data is never silently repeated: `on_exhausted` says
whether running out is an error or a warning.

Paths are relative to the spec file. Plain validation does not check that data files exist:
specs for large machines point at data a CI machine does not have.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from spec.common import SpecModel

_SEED = "Seed of the generator; the same seed gives the same examples in the same order."
_NOT_CHECKED = "Relative to the spec file; existence is not checked by `engine validate`."


class SyntheticImages(SpecModel):
    """Built-in images labelled by a fixed random teacher network: an endless stream with a
    learnable, size-dependent task, so scaling in N and D shows on a CPU."""

    kind: Literal["synthetic_images"] = Field(description="Source type.")
    seed: int = Field(default=0, description=_SEED)
    teacher_width: int = Field(default=64, gt=0, description="Hidden width of the teacher network.")
    teacher_layers: int = Field(default=2, gt=0, description="Hidden layers of the teacher network.")
    label_temperature: float = Field(
        default=1.0, gt=0, description="Temperature of the teacher's label probabilities; lower is less noisy."
    )


class SyntheticTokens(SpecModel):
    """Built-in token sequences from a random sparse Markov source: an endless stream whose
    entropy floor is known, for language models on a CPU."""

    kind: Literal["synthetic_tokens"] = Field(description="Source type.")
    seed: int = Field(default=0, description=_SEED)
    order: int = Field(default=2, gt=0, description="Markov order: how many previous tokens the next one depends on.")
    branching: int = Field(default=8, gt=0, description="Number of tokens that can follow each context.")
    concentration: float = Field(
        default=1.0, gt=0, description="Dirichlet concentration of the next-token probabilities; lower is more peaked."
    )


class BytesTokenizer(SpecModel):
    """UTF-8 bytes as tokens (256 ids plus the specials the model needs)."""

    kind: Literal["bytes"] = Field(description="Tokenizer type.")


class SentencepieceTokenizer(SpecModel):
    """A trained SentencePiece model (e.g. T5's 32k vocabulary)."""

    kind: Literal["sentencepiece"] = Field(description="Tokenizer type.")
    model: str = Field(description=f"Path of the .model file. {_NOT_CHECKED}")


Tokenizer = Annotated[BytesTokenizer | SentencepieceTokenizer, Field(discriminator="kind")]


class TextFiles(SpecModel):
    """The user's text: plain-text or JSON-lines files, tokenized on the fly."""

    kind: Literal["text_files"] = Field(description="Source type.")
    paths: list[str] = Field(min_length=1, description=f"Training files or glob patterns. {_NOT_CHECKED}")
    eval_paths: list[str] = Field(min_length=1, description=f"Validation files or glob patterns. {_NOT_CHECKED}")
    tokenizer: Tokenizer = Field(description="How text becomes token ids: {kind: bytes} or {kind: sentencepiece, model: path}.")


class ImageArrays(SpecModel):
    """The user's images as NumPy arrays: an .npz holding `images` (N, H, W, C) and `labels`
    (N,) class ids or (N, num_classes) multi-hot, or an .npy of images next to it."""

    kind: Literal["image_arrays"] = Field(description="Source type.")
    path: str = Field(description=f"Training arrays (.npz or .npy). {_NOT_CHECKED}")
    eval_path: str = Field(description=f"Validation arrays (.npz or .npy). {_NOT_CHECKED}")


DataSource = Annotated[SyntheticImages | SyntheticTokens | TextFiles | ImageArrays, Field(discriminator="kind")]

IMAGE_SOURCES = ("synthetic_images", "image_arrays")
TOKEN_SOURCES = ("synthetic_tokens", "text_files")


class DataSpec(SpecModel):
    """The data source and the training budget."""

    source: DataSource = Field(description="Where examples come from.")
    steps: int = Field(gt=0, description="Training steps. D = steps x batch_size examples (x seq_len tokens for language models).")
    batch_size: int = Field(gt=0, description="Examples per training step.")
    eval_every: int = Field(gt=0, description="Steps between validation evaluations.")
    eval_batches: int = Field(default=8, gt=0, description="Batches of batch_size validation examples per evaluation.")
    on_exhausted: Literal["refuse", "warn"] = Field(
        default="refuse",
        description=(
            "When the budget needs more examples than a finite source holds: refuse to start the run, "
            "or warn and repeat the data. Built-in synthetic sources never run out."
        ),
    )
