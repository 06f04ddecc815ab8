"""`data:` where examples come from and how many are used (docs/spec-reference.md).

The budget has exactly one unit: `steps` at `batch_size` examples per step. D is reported by the
planner in examples (vit) or tokens (t5 and decoder: seq_len tokens per example, the paper's
D = steps x 128 x 512 for T5). Finite data is never silently repeated: `on_exhausted` says
whether running out is an error or a warning.

Evaluation uses a fixed validation set: a synthetic source's own held-out stream, or a seeded
share of the user's files. Paths are relative to the spec file. Plain validation does not check
that data files exist: specs for large machines point at data a CI machine does not have.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from spec.common import SpecModel, cross_field_error

_SEED = "Seed of the task and the stream; keep it fixed across a sweep so every run sees the same data."
_FILE_SEED = "Seed of the validation split and the example order; keep it fixed across a sweep."
_NOT_CHECKED = "Relative to the spec file; existence is not checked by `engine validate`."
_EVAL_EXAMPLES = "Size of the fixed validation set."
_EVAL_BATCH = "Validation batch size (one compiled eval step serves every batch)."
_EVAL_FRACTION = "Share of the examples held out for validation (whole eval batches, at least one)."


def _check_eval_batches(examples: int, batch_size: int) -> None:
    if examples % batch_size:
        raise cross_field_error(
            f"eval_batch_size {batch_size} does not divide eval_examples {examples}", at="eval_batch_size"
        )


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
        default=0.3, gt=0, description=(
            "Standardised teacher logits are divided by this; lower gives sharper labels, a lower "
            "floor."
        )
    )
    patterns: int = Field(default=64, gt=0, description="Size of the fixed bank of smooth random patterns.")
    active_patterns: int = Field(default=4, gt=0, description="Patterns mixed into each image.")
    pixel_noise: float = Field(default=0.3, ge=0, description="Std of white noise added to every pixel (signal variance is 1).")
    smoothness: float = Field(default=2.5, ge=0, description="Spectral exponent of the patterns (power ~ 1/f^smoothness).")
    eval_examples: int = Field(default=1024, gt=0, description=_EVAL_EXAMPLES)
    eval_batch_size: int = Field(default=128, gt=0, description=_EVAL_BATCH)

    @model_validator(mode="after")
    def _eval_batches_even(self) -> Self:
        _check_eval_batches(self.eval_examples, self.eval_batch_size)
        return self


class SyntheticTokens(SpecModel):
    """Built-in token sequences from a fixed random hierarchical-Dirichlet Markov chain: an
    endless stream with a known entropy floor, for language models on a CPU. Fields mirror
    engine.data.synthetic.SyntheticTokensSettings."""

    kind: Literal["synthetic_tokens"] = Field(description="Source type.")
    seed: int = Field(default=0, ge=0, description=_SEED)
    symbols: int = Field(default=64, gt=0, description=(
        "Distinct content tokens; the model's vocab_size must hold them (+ specials)."
    ))
    order: int = Field(default=2, gt=0, description="Markov order: how many previous tokens the next one depends on.")
    concentration: float = Field(
        default=2.0, gt=0, description="Dirichlet mass of each row around its backoff distribution; lower is sparser rows."
    )
    backoff: float = Field(
        default=0.5, ge=0, le=1, description="Weight of the lower-order row in each row's prior (the rest is the unigram)."
    )
    smoothing: float = Field(default=0.05, ge=0, lt=1, description="Uniform mass mixed into every row.")
    zipf_exponent: float = Field(default=1.0, ge=0, description="Unigram frequencies fall as rank^-zipf_exponent.")
    eval_examples: int = Field(default=1024, gt=0, description=_EVAL_EXAMPLES)
    eval_batch_size: int = Field(default=128, gt=0, description=_EVAL_BATCH)

    @model_validator(mode="after")
    def _eval_batches_even(self) -> Self:
        _check_eval_batches(self.eval_examples, self.eval_batch_size)
        return self


class BytesTokenizer(SpecModel):
    """UTF-8 bytes as tokens (256 ids plus the specials the model needs)."""

    kind: Literal["bytes"] = Field(description="Tokenizer type.")


class SentencepieceTraining(SpecModel):
    """A SentencePiece model trained on this source's own files, once, and cached by content (a
    changed file trains a new one). It uses T5's id layout: pad 0, eos 1, unk 2."""

    vocab_size: int = Field(gt=3, description=(
        "Pieces of the trained model (PAD, EOS and UNK included); the model's vocab_size must hold "
        "them (+ T5 sentinels)."
    ), examples=[8000])
    model_type: Literal["unigram", "bpe", "char", "word"] = Field(default="unigram", description=(
        "SentencePiece's training algorithm."
    ))
    sample_bytes: int = Field(default=100_000_000, gt=0, description=(
        "At most this much text is read for training, spread evenly over the files."
    ))


class SentencepieceTokenizer(SpecModel):
    """A SentencePiece model: the user's own .model file (e.g. T5's 32k vocabulary), or one trained
    on the source's files (`train`). Exactly one of `model` and `train`."""

    kind: Literal["sentencepiece"] = Field(description="Tokenizer type.")
    model: str | None = Field(default=None, description=f"Path of the .model file. {_NOT_CHECKED}")
    train: SentencepieceTraining | None = Field(default=None, description="Train a model on this source's files instead.")

    @model_validator(mode="after")
    def _model_or_train(self) -> Self:
        if (self.model is None) == (self.train is None):
            raise cross_field_error("a sentencepiece tokenizer takes exactly one of `model` (a .model file) and `train`")
        return self


class HuggingfaceTokenizer(SpecModel):
    """A Hugging Face `tokenizers` JSON file (tokenizer.json); its ids are shifted up by 2 so PAD
    and EOS keep 0 and 1, and its own special tokens are not added."""

    kind: Literal["huggingface"] = Field(description="Tokenizer type.")
    file: str = Field(description=f"Path of the tokenizer.json file. {_NOT_CHECKED}")


Tokenizer = Annotated[BytesTokenizer | SentencepieceTokenizer | HuggingfaceTokenizer, Field(discriminator="kind")]


class TextFiles(SpecModel):
    """The user's text, prepared once into a shared token cache (`engine data prepare`): documents
    in file order, an EOS after each, concatenated and cut into examples; a seeded share is held
    out for validation and training reads a seeded global shuffle. Fields mirror
    engine.data.text.TextFilesSettings."""

    kind: Literal["text_files"] = Field(description="Source type.")
    seed: int = Field(default=0, ge=0, description=_FILE_SEED)
    paths: list[str] = Field(
        min_length=1, description=f"Files, directories (read recursively) or glob patterns. {_NOT_CHECKED}"
    )
    format: Literal["text", "jsonl", "parquet", "array_record"] = Field(
        default="text",
        description=(
            "text: each file is one document; jsonl: one JSON object per line (.gz, .bz2, .xz read as they are); "
            "parquet: a string column; array_record: each record one UTF-8 document."
        ),
    )
    text_field: str = Field(default="text", min_length=1, description=(
        "The JSON field (jsonl) or column (parquet) holding a document's text."
    ))
    tokenizer: Tokenizer = Field(
        description="How text becomes token ids: {kind: bytes}, {kind: sentencepiece, model: path}, "
        "{kind: sentencepiece, train: {vocab_size: n}} or {kind: huggingface, file: path}."
    )
    eval_fraction: float = Field(default=0.05, gt=0, lt=1, description=_EVAL_FRACTION)
    eval_batch_size: int = Field(default=64, gt=0, description=_EVAL_BATCH)
    max_eval_examples: int = Field(default=2048, gt=0, description=(
        "The validation set holds at most this many examples, however large the corpus."
    ))


class ImageArrays(SpecModel):
    """The user's images as NumPy arrays: one .npz holding `images` [N, H, W, C] and `labels`
    (class ids [N], multi-hot [N, num_classes], or id lists [N, K] padded with -1), or two .npy
    files (images, then labels), which are memory-mapped (use them for large sets); a seeded share
    is held out for validation. Fields mirror engine.data.files.ImageArraysSettings."""

    kind: Literal["image_arrays"] = Field(description="Source type.")
    seed: int = Field(default=0, ge=0, description=_FILE_SEED)
    paths: list[str] = Field(min_length=1, max_length=2, description=f"One .npz, or two .npy files. {_NOT_CHECKED}")
    eval_fraction: float = Field(default=0.05, gt=0, lt=1, description=_EVAL_FRACTION)
    eval_batch_size: int = Field(default=64, gt=0, description=_EVAL_BATCH)


class ImageRecords(SpecModel):
    """The user's images as records of encoded PNG or JPEG bytes with labels, in Parquet files:
    prepared once into a shared cache, decoded (and resized to the model's image size when they
    differ) by loader threads as steps need them. Fields mirror engine.data.images.ImageRecordsSettings."""

    kind: Literal["image_records"] = Field(description="Source type.")
    seed: int = Field(default=0, ge=0, description=_FILE_SEED)
    paths: list[str] = Field(min_length=1, description=f"Parquet files, directories or glob patterns. {_NOT_CHECKED}")
    image_field: str = Field(default="image", min_length=1, description=(
        "Column of encoded image bytes (binary, or a struct with a `bytes` field as Hugging Face "
        "datasets write it)."
    ))
    label_field: str = Field(default="label", min_length=1, description=(
        "Column of labels: a class id, or a list of class ids (multi-hot)."
    ))
    eval_fraction: float = Field(default=0.05, gt=0, lt=1, description=_EVAL_FRACTION)
    eval_batch_size: int = Field(default=64, gt=0, description=_EVAL_BATCH)
    max_eval_examples: int = Field(default=2048, gt=0, description=(
        "The validation set holds at most this many examples, however large the set."
    ))


DataSource = Annotated[
    SyntheticImages | SyntheticTokens | TextFiles | ImageArrays | ImageRecords, Field(discriminator="kind")
]

IMAGE_SOURCES = ("synthetic_images", "image_arrays", "image_records")
TOKEN_SOURCES = ("synthetic_tokens", "text_files")


class DataSpec(SpecModel):
    """The data source and the training budget."""

    source: DataSource = Field(description="Where examples come from.")
    steps: int | None = Field(
        default=None,  # required unless init.budget_fraction sets it: never None once planned
        gt=0,
        description=(
            "Training steps. D = steps x batch_size examples (x seq_len tokens for language models). "
            "A pretrained run's init.budget_fraction, when set, replaces it (a fraction of the source's D)."
        ),
        examples=[600],
    )
    flops: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Training budget in FLOPs instead of steps: C = k N D c_mul(S) (k = 6, 3 for encoder-decoder; "
            "c_mul of the run's sparsity schedule, eq. 4), and steps = C / (k N c_mul x batch_size x tokens per "
            "example), rounded. `engine plan` shows the budget met; sweep it with model.nonzeros for an IsoFLOP design."
        ),
        examples=[1.0e9],
    )
    batch_size: int = Field(gt=0, description="Examples per training step.", examples=[32])
    eval_every: int = Field(gt=0, description="Steps between validation evaluations.", examples=[100])
    on_exhausted: Literal["refuse", "warn"] = Field(
        default="refuse",
        description=(
            "When the budget needs more examples than a finite source holds: refuse to start the run, "
            "or warn and go on with a fresh order of the same data. Built-in synthetic sources never run out."
        ),
    )

