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

from pydantic import Field, model_validator

from spec.common import SpecModel, cross_field_error

_SEED = "Seed of the generator; the same seed gives the same examples in the same order."
_NOT_CHECKED = "Relative to the spec file; existence is not checked by `engine validate`."


class SyntheticImages(SpecModel):
    """Built-in images mixed from a bank of smooth random patterns, multi-hot labels from a fixed
    random teacher network: an endless stream with a learnable, size-dependent task, so scaling in
    N and D shows on a CPU. Fields mirror engine.data.synthetic.SyntheticImagesSettings."""

    kind: Literal["synthetic_images"] = Field(description="Source type.")
    seed: int = Field(default=0, ge=0, description=_SEED)
    teacher_width: int = Field(default=256, gt=0, description="Hidden units per teacher layer (the features to discover).")
    teacher_layers: int = Field(default=1, gt=0, description="Hidden layers of the teacher MLP.")
    teacher_frequency: float = Field(
        default=0.75, gt=0, description="Std of the teacher's pre-activations; larger oscillates more and is harder."
    )
    feature_decay: float = Field(
        default=1.0, ge=0, description="Teacher readout weights decay as unit_index^-feature_decay (a tail of weak features)."
    )
    label_temperature: float = Field(
        default=0.3, gt=0, description="Standardised teacher logits are divided by this; lower gives sharper labels, a lower floor."
    )
    patterns: int = Field(default=64, gt=0, description="Size of the fixed bank of smooth random patterns.")
    active_patterns: int = Field(default=4, gt=0, description="Patterns mixed into each image.")
    pixel_noise: float = Field(default=0.3, ge=0, description="Std of white noise added to every pixel (signal variance is 1).")
    smoothness: float = Field(default=2.5, ge=0, description="Spectral exponent of the patterns (power ~ 1/f^smoothness).")


class SyntheticTokens(SpecModel):
    """Built-in token sequences from a fixed random hierarchical-Dirichlet Markov chain: an
    endless stream with a known entropy floor, for language models on a CPU. Fields mirror
    engine.data.synthetic.SyntheticTokensSettings."""

    kind: Literal["synthetic_tokens"] = Field(description="Source type.")
    seed: int = Field(default=0, ge=0, description=_SEED)
    symbols: int = Field(default=64, gt=0, description="Distinct content tokens; the model's vocab_size must hold them (+ specials).")
    order: int = Field(default=2, gt=0, description="Markov order: how many previous tokens the next one depends on.")
    concentration: float = Field(
        default=2.0, gt=0, description="Dirichlet mass of each row around its backoff distribution; lower is sparser rows."
    )
    backoff: float = Field(
        default=0.5, ge=0, le=1, description="Weight of the lower-order row in each row's prior (the rest is the unigram)."
    )
    smoothing: float = Field(default=0.05, ge=0, lt=1, description="Uniform mass mixed into every row.")
    zipf_exponent: float = Field(default=1.0, ge=0, description="Unigram frequencies fall as rank^-zipf_exponent.")


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
    eval_examples: int = Field(default=1024, gt=0, description="Size of the fixed validation set.")
    eval_batch_size: int = Field(
        default=128, gt=0, description="Validation batch size; must divide eval_examples (one compiled eval step)."
    )
    on_exhausted: Literal["refuse", "warn"] = Field(
        default="refuse",
        description=(
            "When the budget needs more examples than a finite source holds: refuse to start the run, "
            "or warn and repeat the data. Built-in synthetic sources never run out."
        ),
    )

    @model_validator(mode="after")
    def _eval_batches_even(self) -> DataSpec:
        if self.eval_examples % self.eval_batch_size:
            raise cross_field_error(
                f"eval_batch_size {self.eval_batch_size} does not divide eval_examples {self.eval_examples}",
                at="eval_batch_size",
            )
        return self
