"""The user's files: stdlib text corpus, image arrays, exhaustion policy, bad files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from corpus import copy_stdlib_corpus

from engine.data import DataRepeatWarning, build_source
from engine.data.tokenizers import BYTE_OFFSET
from engine.errors import UserError
from engine.planning.sizing import ModelDims

DECODER = ModelDims("decoder", 32, 2, 16, 64, 2, vocab_size=259, seq_len=64)
T5 = ModelDims("t5", 32, 2, 16, 64, 2, decoder_layers=2, vocab_size=300, seq_len=64, target_len=16)
VIT = ModelDims("vit", 32, 2, 16, 64, 2, image_size=8, patch_size=4, channels=3, num_classes=5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    assert copy_stdlib_corpus(root / "text"), "no stdlib text files found"
    return root


def text(corpus: Path, dims: ModelDims, **settings: object) -> object:
    return build_source("text_files", {"paths": ["text"], **settings}, dims, 16, 0, corpus)


def test_stdlib_text_as_decoder_windows(corpus: Path) -> None:
    source = text(corpus, DECODER)
    batch = source.batch(0)["tokens"]
    assert batch.shape == (16, 65) and batch.dtype == np.int32
    decoded = bytes((batch[batch >= BYTE_OFFSET] - BYTE_OFFSET).astype(np.uint8)).decode("utf-8", "replace")
    assert "def " in decoded or "import" in decoded or "return" in decoded
    assert source.units_per_example == 64 and source.available_examples > 1000
    again = text(corpus, DECODER)
    assert np.array_equal(again.batch(9)["tokens"], source.batch(9)["tokens"])


def test_stdlib_text_for_t5_and_disjoint_eval(corpus: Path) -> None:
    source = text(corpus, T5)
    batch = source.batch(3)
    assert batch["inputs"].shape == (16, 64) and batch["targets"].shape == (16, 16)
    evals = source.eval_batches()
    assert evals and all(b["inputs"].shape == (64, 64) for b in evals)
    assert all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(evals, text(corpus, T5).eval_batches(), strict=True))
    order = source.order  # the keyed split and shuffle (engine/data/shuffle.py)
    eval_ids = {order.eval_example(i) for i in range(order.eval_examples)}
    train_ids = {order.train_example(g) for g in range(source.available_examples // 16 * 16)}
    assert not eval_ids & train_ids
    assert len(train_ids) == source.available_examples // 16 * 16  # one epoch, no repeats


def test_vocab_too_small_for_bytes(corpus: Path) -> None:
    small = ModelDims("decoder", 32, 2, 16, 64, 2, vocab_size=200, seq_len=64)
    with pytest.raises(UserError, match="vocab_size must be at least 259"):
        text(corpus, small)


def test_exhaustion_refuse_names_file_and_counts(corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_bytes(Path(__file__).read_bytes())
    source = build_source("text_files", {"paths": ["one.txt"]}, DECODER, 16, 0, tmp_path)
    available = source.available_examples
    with pytest.raises(UserError, match=rf"one\.txt holds {available} training examples but the run needs 16000"):
        build_source("text_files", {"paths": ["one.txt"]}, DECODER, 16, 0, tmp_path, total_steps=1000)
    with pytest.raises(UserError, match="refusing to repeat"):
        source.batch(available // 16 + 1)


def test_exhaustion_warn_wraps_with_fresh_permutations(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_bytes(Path(__file__).read_bytes())
    settings = {"paths": ["one.txt"], "on_exhausted": "warn", "eval_batch_size": 4}
    with pytest.warns(DataRepeatWarning, match="repeating"):
        source = build_source("text_files", settings, DECODER, 4, 0, tmp_path, total_steps=10_000)
    n = source.available_examples
    epochs = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataRepeatWarning)
        source.batch(epochs * n // 4)  # drawing past the first epoch warns, and is allowed
    taken = np.array([source.order.train_example(g) for g in range(epochs * n)])
    first, second = taken[:n], taken[n : 2 * n]
    train = sorted(set(range(source.order.total)) - {source.order.eval_example(i) for i in range(source.order.eval_examples)})
    assert sorted(first) == sorted(second) == train  # each epoch: every training example once
    assert not np.array_equal(first, second)  # in a different order
    again = build_source("text_files", settings, DECODER, 4, 0, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataRepeatWarning)
        assert np.array_equal(again.batch(2 * n // 4 + 1)["tokens"], source.batch(2 * n // 4 + 1)["tokens"])


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 8, 8, 3), dtype=np.uint8)


def test_image_npz_with_class_ids(tmp_path: Path) -> None:
    labels = np.arange(300) % 5
    np.savez(tmp_path / "data.npz", images=_images(300), labels=labels)
    source = build_source("image_arrays", {"paths": ["data.npz"], "eval_batch_size": 10}, VIT, 8, 0, tmp_path, total_steps=30)
    batch = source.batch(2)
    assert batch["images"].shape == (8, 8, 8, 3) and batch["images"].dtype == np.float32
    assert 0.0 <= batch["images"].min() and batch["images"].max() <= 1.0
    assert batch["labels"].shape == (8, 5) and (batch["labels"].sum(axis=1) == 1).all()
    assert source.available_examples == 300 - 10 and len(source.eval_batches()) == 1


def test_image_npy_pair_with_multi_hot_and_id_lists(tmp_path: Path) -> None:
    multi_hot = (np.random.default_rng(1).random((100, 5)) < 0.3).astype(np.float32)
    np.save(tmp_path / "images.npy", _images(100).astype(np.float32))
    np.save(tmp_path / "labels.npy", multi_hot)
    source = build_source("image_arrays", {"paths": ["images.npy", "labels.npy"], "eval_batch_size": 10}, VIT, 8, 0, tmp_path)
    assert isinstance(source.images, np.memmap)  # .npy images are read per batch, never loaded whole
    assert np.array_equal(source.batch(3)["labels"], multi_hot[source._order.indices(3)])
    np.save(tmp_path / "ids.npy", np.array([[0, 3, -1]] * 100))
    source = build_source("image_arrays", {"paths": ["images.npy", "ids.npy"], "eval_batch_size": 10}, VIT, 8, 0, tmp_path)
    assert (source.batch(0)["labels"] == np.array([1, 0, 0, 1, 0], np.float32)).all()


@pytest.mark.parametrize(
    "write,match",
    [
        (lambda d: None, "does not exist"),
        (lambda d: (d / "data.npz").write_bytes(b"not a zip"), "cannot read"),
        (lambda d: np.savez(d / "data.npz", images=_images(50)), "lacks array"),
        (lambda d: np.savez(d / "data.npz", images=_images(50), labels=np.arange(49) % 5), "50 images but 49 labels"),
        (lambda d: np.savez(d / "data.npz", images=_images(50), labels=np.arange(50)), "out of range"),
        (lambda d: np.savez(d / "data.npz", images=_images(50)[:, :4], labels=np.arange(50) % 5), "shape"),
        (lambda d: np.savez(d / "data.npz", images=_images(50), labels=np.array([{"a": 1}] * 50, dtype=object)), "cannot read"),
    ],
)
def test_bad_image_files_are_user_errors_naming_the_file(tmp_path: Path, write: object, match: str) -> None:
    write(tmp_path)
    with pytest.raises(UserError, match=match) as raised:
        build_source("image_arrays", {"paths": ["data.npz"], "eval_batch_size": 10}, VIT, 8, 0, tmp_path)
    assert "data.npz" in str(raised.value)


def test_missing_text_path_and_sentencepiece(corpus: Path) -> None:
    with pytest.raises(UserError, match="nothing.txt does not exist"):
        build_source("text_files", {"paths": ["nothing.txt"]}, DECODER, 8, 0, corpus)
    with pytest.raises(UserError, match="matches no files"):
        build_source("text_files", {"paths": ["text/*.md"]}, DECODER, 8, 0, corpus)
    with pytest.raises(UserError, match="spm.model does not exist"):
        build_source("text_files", {"paths": ["text"], "tokenizer": "spm.model"}, DECODER, 8, 0, corpus)
