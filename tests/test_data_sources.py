"""Synthetic sources and build_source: determinism, formats, fixed disjoint eval sets."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from engine.data import DataSource, SyntheticTokensSettings, build_source
from engine.data.span_corruption import raw_length_for_inputs
from engine.data.synthetic import RecentBatches, forget_recent
from engine.errors import UserError
from engine.planning.sizing import ModelDims

VIT = ModelDims("vit", 32, 2, 16, 64, 2, image_size=16, patch_size=4, channels=3, num_classes=12)
DECODER = ModelDims("decoder", 32, 2, 16, 64, 2, vocab_size=128, seq_len=64)
T5 = ModelDims("t5", 32, 2, 16, 64, 2, decoder_layers=2, vocab_size=128, seq_len=64, target_len=16)
SMALL_EVAL = {"eval_examples": 64, "eval_batch_size": 32}
KINDS = [("synthetic_images", VIT), ("synthetic_tokens", DECODER), ("synthetic_tokens", T5)]


def make(kind: str, dims: ModelDims, seed: int = 0, batch_size: int = 8, **settings: object) -> DataSource:
    return build_source(kind, {**SMALL_EVAL, **settings}, dims, batch_size, seed, Path("."))


def equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind,dims", KINDS)
def test_batch_is_a_pure_function_of_seed_and_step(kind: str, dims: ModelDims) -> None:
    first, second = make(kind, dims), make(kind, dims)
    assert isinstance(first, DataSource)
    later = second.batch(7)  # drawn out of order: no iterator state
    assert equal(first.batch(3), second.batch(3))
    assert equal(first.batch(7), later)
    assert not equal(first.batch(3), first.batch(4))
    assert not equal(first.batch(3), make(kind, dims, seed=1).batch(3))
    assert first.fingerprint == second.fingerprint != make(kind, dims, seed=1).fingerprint


def test_formats_match_the_models() -> None:
    images = make("synthetic_images", VIT).batch(0)
    assert images["images"].shape == (8, 16, 16, 3) and images["images"].dtype == np.float32
    assert images["labels"].shape == (8, 12) and images["labels"].dtype == np.float32
    assert set(np.unique(images["labels"])) <= {0.0, 1.0}

    tokens = make("synthetic_tokens", DECODER).batch(0)["tokens"]
    assert tokens.shape == (8, 65) and tokens.dtype == np.int32
    assert tokens.min() >= 2 and tokens.max() < 2 + 64  # content ids only: no PAD/EOS

    t5 = make("synthetic_tokens", T5).batch(0)
    spans = raw_length_for_inputs(64).noise_spans
    assert t5["inputs"].shape == (8, 64) and t5["inputs"].dtype == np.int32
    assert t5["targets"].shape == (8, 16) and t5["targets"].dtype == np.int32
    assert (t5["inputs"][:, -1] == 1).all()  # exactly seq_len: EOS last, no padding
    assert (t5["targets"][:, 0] == 127).all()  # first sentinel is vocab_size - 1
    assert t5["inputs"].max() < 128 and (t5["inputs"] >= 128 - spans).sum(axis=1).tolist() == [spans] * 8


@pytest.mark.parametrize("kind,dims", KINDS)
def test_eval_set_fixed_disjoint_and_independent_of_training_batch(kind: str, dims: ModelDims) -> None:
    source = make(kind, dims)
    evals = source.eval_batches()
    assert len(evals) == 2 and all(len(next(iter(b.values()))) == 32 for b in evals)
    other = make(kind, dims, batch_size=16)  # another run of the sweep, other batch size
    assert all(equal(a, b) for a, b in zip(evals, other.eval_batches(), strict=True))
    key = "images" if kind == "synthetic_images" else next(iter(evals[0]))
    eval_rows = {row.tobytes() for batch in evals for row in batch[key]}
    train_rows = {row.tobytes() for step in range(20) for row in source.batch(step)[key]}
    assert not eval_rows & train_rows


def test_token_vocab_too_small_is_a_user_error() -> None:
    small = ModelDims("decoder", 32, 2, 16, 64, 2, vocab_size=40, seq_len=64)
    with pytest.raises(UserError, match="vocab_size must be at least 66"):
        make("synthetic_tokens", small)


def test_t5_target_len_too_short_is_a_user_error() -> None:
    short = ModelDims("t5", 32, 2, 16, 64, 2, decoder_layers=2, vocab_size=128, seq_len=64, target_len=8)
    with pytest.raises(UserError, match="target_len >= 14"):
        make("synthetic_tokens", short)


def test_settings_are_checked_and_dataclasses_accepted() -> None:
    with pytest.raises(ValueError, match="no setting"):
        make("synthetic_tokens", DECODER, ordr=2)
    with pytest.raises(ValueError, match="unknown data source kind"):
        build_source("synthetic_text", None, DECODER, 8, 0, Path("."))
    settings = SyntheticTokensSettings(order=1, eval_examples=64, eval_batch_size=32)
    source = build_source("synthetic_tokens", settings, DECODER, 8, 0, Path("."))
    dumped = build_source("synthetic_tokens", {"kind": "synthetic_tokens", "order": 1, **SMALL_EVAL}, DECODER, 8, 0, Path("."))
    assert equal(source.batch(0), dumped.batch(0))


def test_units_and_availability() -> None:
    assert make("synthetic_images", VIT).units_per_example == 1
    assert make("synthetic_tokens", DECODER).units_per_example == 64
    assert make("synthetic_tokens", T5).units_per_example == 64  # encoder input length (paper's D)
    assert make("synthetic_images", VIT).available_examples is None
    assert make("synthetic_tokens", T5).examples_per_step == 8


def test_reference_losses_leave_a_large_reducible_range() -> None:
    tokens = make("synthetic_tokens", DECODER).reference_losses()
    assert 0.5 < tokens["floor"] < tokens["order_1"] - 0.5 < tokens["trivial"] - 1.0
    images = make("synthetic_images", VIT).reference_losses()  # summed over classes, as the loss
    classes = VIT.num_classes
    assert 0.1 * classes < images["floor"] < images["trivial"] - 0.2 * classes
    assert images["zero_logits"] == pytest.approx(classes * np.log(2.0))


def test_teacher_loss_on_the_validation_set_is_its_floor() -> None:
    """eval_floor is the teacher's own loss on the fixed validation set: close to the expected floor
    (sampling noise of 64 images only), and below what a predictor blind to the images scores."""
    source = make("synthetic_images", VIT)
    losses = source.reference_losses()
    assert abs(losses["eval_floor"] - losses["floor"]) < 0.1 * losses["floor"]
    batches = source.eval_batches()
    labels = np.concatenate([b["labels"] for b in batches])
    rate = np.clip(labels.mean(axis=0), 1e-6, 1 - 1e-6)  # the best constant predictor for this very set
    blind = -(labels * np.log(rate) + (1 - labels) * np.log1p(-rate)).sum(axis=1).mean()
    assert losses["eval_floor"] < blind - 0.1 * VIT.num_classes


def test_empirical_token_statistics_match_the_process() -> None:
    """The sampler draws from the tables: the empirical unigram entropy matches order_0."""
    source = make("synthetic_tokens", DECODER, batch_size=64)
    tokens = np.concatenate([source.batch(step)["tokens"].ravel() for step in range(20)])
    counts = np.bincount(tokens)
    p = counts[counts > 0] / counts.sum()
    assert abs(-(p * np.log(p)).sum() - source.reference_losses()["order_0"]) < 0.05


def test_spec_style_tokenizer_mapping_is_accepted() -> None:
    from engine.data.build import make_settings

    settings = make_settings("text_files", {"paths": ["a.txt"], "tokenizer": {"kind": "bytes"}})
    assert settings.tokenizer == "bytes" and settings.paths == ("a.txt",)
    spm = make_settings("text_files", {"paths": ["a.txt"], "tokenizer": {"kind": "sentencepiece", "model": "m.model"}})
    assert spm.tokenizer == "m.model"
    assert make_settings("synthetic_tokens", {"kind": "synthetic_tokens", "seed": 3}, seed=3).order == 2
    with pytest.raises(ValueError, match="seed 4 but build_source got seed 3"):
        make_settings("synthetic_tokens", {"seed": 4}, seed=3)


@pytest.mark.parametrize("kind,dims", KINDS)
def test_runs_share_kept_batches_equal_to_fresh_draws(kind: str, dims: ModelDims) -> None:
    forget_recent()
    first = make(kind, dims)
    kept, evals = first.batch(5), first.eval_batches()
    second = make(kind, dims)  # the sweep's next run of this task, seed and batch size
    assert second.batch(5) is kept and all(a is b for a, b in zip(second.eval_batches(), evals, strict=True))
    assert all(not array.flags.writeable for array in kept.values())  # shared: nobody may write
    forget_recent()
    assert equal(make(kind, dims).batch(5), kept)  # keeping changes no batch
    assert make(kind, dims, batch_size=16).batch(5) is not make(kind, dims).batch(5)


@pytest.mark.parametrize("kind,dims", KINDS)
def test_a_kept_batch_is_read_without_making_a_generator(kind: str, dims: ModelDims,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A generator costs ~0.25 ms, a kept batch's lookup microseconds: only a miss makes one."""
    import engine.data.synthetic

    forget_recent()
    source = make(kind, dims)
    made: list[tuple[int, ...]] = []
    real = engine.data.synthetic.rng_for
    monkeypatch.setattr(engine.data.synthetic, "rng_for", lambda *cell: made.append(cell) or real(*cell))
    source.batch(5), source.eval_batches()
    drawn = len(made)
    source.batch(5), source.eval_batches(), make(kind, dims).batch(5)
    assert drawn >= 2 and len(made) == drawn


def test_t5_and_decoder_windows_of_one_task_are_kept_apart() -> None:
    forget_recent()
    assert make("synthetic_tokens", T5).batch(0).keys() == {"inputs", "targets"}
    assert make("synthetic_tokens", DECODER).batch(0).keys() == {"tokens"}


def test_kept_batches_stay_within_their_byte_limit_dropping_the_least_recent() -> None:
    recent = RecentBatches(limit_bytes=3 * 800)

    def batch(value: float) -> dict[str, np.ndarray]:
        return {"x": np.full(100, value)}  # 800 bytes

    for step in range(3):
        recent.get(step, partial(batch, step))
    recent.get(0, partial(batch, -1.0))  # step 0 is used again, so step 1 is now the oldest
    recent.get(3, partial(batch, 3))
    assert list(recent.kept) == [2, 0, 3] and recent.bytes == 3 * 800
    assert recent.get(0, partial(batch, -1.0))["x"][0] == 0  # still the batch first made
