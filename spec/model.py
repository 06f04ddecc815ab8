"""`model:` the family, its base shape, and how its size is set (docs/spec-reference.md).

The paper scales only the hidden width (appendix A): depth, heads and the MLP ratio stay those of
the base, d_model changes. A run's size is given either as a target number of non-zero weights
(`nonzeros`, the engine picks d_model at the run's sparsity) or as a fixed `d_model`. The base
shape maps field for field onto engine.planning.sizing.ModelDims; resolving a spec into ModelDims is
engine/planning/plan.py's job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from spec.common import SpecModel, cross_field_error

_LAYERS = "Number of transformer blocks (for t5: encoder blocks). Fixed when the width is scaled."
_HEADS = "Attention heads; fixed when the width is scaled, head width = round(d_model / num_heads)."
_MLP_RATIO = "MLP hidden width as a multiple of d_model: mlp_dim = round(mlp_ratio * d_model)."

PositiveInt = Annotated[int, Field(gt=0)]


class VitBase(SpecModel):
    """Base shape of a ViT for multi-label image classification (JFT-style, sigmoid outputs)."""

    layers: PositiveInt | None = Field(default=None, description=_LAYERS)
    num_heads: PositiveInt | None = Field(default=None, description=_HEADS)
    mlp_ratio: float | None = Field(default=None, gt=0, description=_MLP_RATIO)
    image_size: PositiveInt | None = Field(default=None, description="Side of the square input image in pixels.")
    patch_size: PositiveInt | None = Field(default=None, description="Side of a square patch in pixels; must divide image_size.")
    channels: PositiveInt | None = Field(default=None, description="Input image channels.")
    num_classes: PositiveInt | None = Field(default=None, description="Number of labels (JFT-4B: 29593).")

    @model_validator(mode="after")
    def _patches_tile_the_image(self) -> VitBase:
        if self.image_size and self.patch_size and self.image_size % self.patch_size:
            raise cross_field_error(
                f"patch_size {self.patch_size} does not divide image_size {self.image_size}", at="patch_size"
            )
        return self


class T5Base(SpecModel):
    """Base shape of a T5 v1.1 encoder-decoder (RMSNorm, gated-GELU MLP, untied LM head)."""

    layers: PositiveInt | None = Field(default=None, description=_LAYERS)
    decoder_layers: PositiveInt | None = Field(default=None, description="Number of decoder blocks.")
    num_heads: PositiveInt | None = Field(default=None, description=_HEADS)
    mlp_ratio: float | None = Field(default=None, gt=0, description=_MLP_RATIO)
    vocab_size: PositiveInt | None = Field(default=None, description="Vocabulary size of the token embedding and LM head.")
    seq_len: PositiveInt | None = Field(
        default=None, description="Encoder input length in tokens; D counts seq_len tokens per example.")
    target_len: PositiveInt | None = Field(default=None, description="Decoder target length in tokens (span-corruption targets).")
    relative_buckets: PositiveInt | None = Field(default=None, description="Relative position buckets of the attention bias.")


class DecoderBase(SpecModel):
    """Base shape of a GPT-style causal language model (learned positions, pre-LN, untied head)."""

    layers: PositiveInt | None = Field(default=None, description=_LAYERS)
    num_heads: PositiveInt | None = Field(default=None, description=_HEADS)
    mlp_ratio: float | None = Field(default=None, gt=0, description=_MLP_RATIO)
    vocab_size: PositiveInt | None = Field(default=None, description="Vocabulary size of the token embedding and LM head.")
    seq_len: PositiveInt | None = Field(
        default=None, description="Context length in tokens; D counts seq_len tokens per example.")


# The paper's bases (appendix A). Their width (768 for both) is not part of the base: the width is
# the size knob, set per run by `nonzeros` or `d_model`.
PRESETS: dict[str, dict[str, Any]] = {
    "vit-b16": dict(
        layers=12, num_heads=12, mlp_ratio=4.0, image_size=224, patch_size=16, channels=3, num_classes=29593
    ),
    "t5-base-v1.1": dict(
        layers=12,
        decoder_layers=12,
        num_heads=12,
        mlp_ratio=2048 / 768,
        vocab_size=32128,
        seq_len=512,
        target_len=114,
        relative_buckets=32,
    ),
}

# Bounds on a run's size: far beyond any model trained so far (widest published d_model ~ 2e4,
# largest N ~ 1e12), small enough that planning's width search and FLOP counts stay exact.
MAX_D_MODEL = 65536
MAX_NONZEROS = 1e15

_PRESET_DOC = "A published base shape whose values fill every base field not given explicitly in `base`."
_NONZEROS_DOC = (
    "Target number of non-zero weights N of the sparsified layers at the end of training. The engine "
    "picks the d_model (a multiple of width_multiple) whose exact count at the run's sparsity is "
    f"closest. Give either this or d_model. At most {MAX_NONZEROS:g}; `engine validate --plan` checks that a "
    f"width up to d_model {MAX_D_MODEL} reaches it."
)
_D_MODEL_DOC = f"Fixed hidden width, at most {MAX_D_MODEL}. Give either this or nonzeros."
_WIDTH_MULTIPLE_DOC = "d_model is a multiple of this (e.g. the head count, or 128 for accelerator-friendly shapes)."


class _SizedModel(SpecModel):
    """Fields and checks shared by every family."""

    nonzeros: float | None = Field(
        default=None, gt=0, le=MAX_NONZEROS, description=_NONZEROS_DOC, examples=[20000, 4.2e7]
    )
    d_model: int | None = Field(default=None, gt=0, le=MAX_D_MODEL, description=_D_MODEL_DOC, examples=[768])
    width_multiple: int = Field(default=1, gt=0, le=MAX_D_MODEL, description=_WIDTH_MULTIPLE_DOC, examples=[8, 128])
    if TYPE_CHECKING:  # each family declares its own `base` field (VitBase, T5Base, DecoderBase)
        base: SpecModel

    @model_validator(mode="after")
    def _size_and_base_complete(self) -> _SizedModel:
        if (self.nonzeros is None) == (self.d_model is None):
            preset_width = " (the presets' base width is 768)" if getattr(self, "preset", None) else ""
            raise cross_field_error(f"give exactly one of `nonzeros` or `d_model`{preset_width}")
        if self.d_model is not None and self.d_model % self.width_multiple:
            raise cross_field_error(
                f"d_model {self.d_model} is not a multiple of width_multiple {self.width_multiple}", at="d_model"
            )
        preset = getattr(self, "preset", None)
        given = (PRESETS[preset] if preset else {}) | self.base.model_dump(exclude_none=True)
        missing = [name for name in type(self.base).model_fields if name not in given]
        if missing:
            raise cross_field_error(
                f"base shape incomplete, missing {', '.join(missing)} (set them under `base` or choose a `preset`)",
                at="base" if "base" in self.model_fields_set else None,
            )
        return self


class VitModel(_SizedModel):
    """A Vision Transformer (ViT) for multi-label image classification."""

    kind: Literal["vit"] = Field(description="Model family.")
    preset: Literal["vit-b16"] | None = Field(default=None, description=_PRESET_DOC)
    base: VitBase = Field(default_factory=VitBase, description="Base shape; overrides the preset field by field.")


class T5Model(_SizedModel):
    """A T5 v1.1 encoder-decoder trained with span corruption. FLOPs count 3 N D (section 3.3)."""

    kind: Literal["t5"] = Field(description="Model family.")
    preset: Literal["t5-base-v1.1"] | None = Field(default=None, description=_PRESET_DOC)
    base: T5Base = Field(default_factory=T5Base, description="Base shape; overrides the preset field by field.")


class DecoderModel(_SizedModel):
    """A GPT-style decoder-only language model."""

    kind: Literal["decoder"] = Field(description="Model family.")
    base: DecoderBase = Field(default_factory=DecoderBase, description="Base shape (no presets for this family).")


ModelSpec = Annotated[VitModel | T5Model | DecoderModel, Field(discriminator="kind")]
