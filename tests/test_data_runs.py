"""Runs that read the prepared cache end to end: resume, tokenizers, image records, planning."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from corpus import copy_stdlib_corpus
from helpers import final_params

from engine.cli import main
from engine.planning.plan import plan_experiment
from engine.training.build import build_setup
from engine.training.loop import train_run

SPEC = Path(__file__).parent / "fixtures" / "data" / "tiny_text.yaml"


def _workspace(tmp_path: Path, spec_text: str | None = None) -> Path:
    copy_stdlib_corpus(tmp_path / "text")
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text if spec_text is not None else SPEC.read_text())
    return spec


class Killed(Exception):
    pass


def test_a_run_killed_mid_way_resumes_bit_identical_from_the_prepared_cache(tmp_path: Path) -> None:
    spec = _workspace(tmp_path)
    [run] = plan_experiment(spec, [f"run.output_dir={tmp_path / 'runs'}"])
    setup = build_setup(run)
    whole = tmp_path / "whole"
    train_run(setup, whole)

    def kill_at_8(step: int, loss: float) -> None:
        if step == 8:  # before step 8's checkpoint: steps 5-8 (and the prefetched batches) are lost
            raise Killed()

    interrupted = tmp_path / "interrupted"
    with pytest.raises(Killed):
        train_run(setup, interrupted, on_progress=kill_at_8)
    outcome = train_run(build_setup(run), interrupted)
    assert outcome.resumed_from == 4
    _, expected = final_params(whole, setup)
    _, resumed = final_params(interrupted, setup)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(resumed), strict=True):
        assert np.array_equal(a, b)
    assert (interrupted / "metrics.jsonl").read_text().count("eval_loss") == 3


def test_engine_data_prepare_summary_and_help(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = _workspace(tmp_path)
    assert main(["data", "summary", str(spec)]) == 0
    assert "not prepared" in capsys.readouterr().out
    assert main(["data", "prepare", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "prepared" in out and "tokens" in out
    assert main(["data", "summary", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "prepared" in out and "examples" in out and "epochs" in out
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    assert "prepare" in capsys.readouterr().out


def test_validate_plan_names_the_line_of_a_run_that_would_exhaust_its_data(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    text = SPEC.read_text().replace("  steps: 12\n", "  steps: 12\n") + "sweep:\n  grid:\n    data.steps: [12, 100000]\n"
    spec = _workspace(tmp_path, text)
    assert main(["validate", "--plan", str(spec)]) == 1
    err = capsys.readouterr()
    lines = text.splitlines()
    line = next(i for i, text in enumerate(lines, start=1) if "100000" in text)
    assert f"{spec}:{line}:" in err.out + err.err
    assert "estimated from file sizes" in err.out + err.err
    main(["data", "prepare", str(spec)])
    capsys.readouterr()
    assert main(["validate", "--plan", str(spec)]) == 1
    both = "".join(capsys.readouterr())
    assert f"{spec}:{line}:" in both and "estimated" not in both and "epochs" in both
    assert main(["plan", str(spec)]) == 0
    assert "epochs" in capsys.readouterr().out


def _sentencepiece_spec(family: str, tokenizer: str) -> str:
    model = ("kind: decoder\n  base: {layers: 1, num_heads: 2, mlp_ratio: 2.0, vocab_size: 320, seq_len: 32}"
             if family == "decoder" else
             "kind: t5\n  base: {layers: 1, decoder_layers: 1, num_heads: 2, mlp_ratio: 2.0, vocab_size: 320, "
             "seq_len: 32, target_len: 12, relative_buckets: 8}")
    return (SPEC.read_text()
            .replace("kind: decoder\n  base: {layers: 1, num_heads: 2, mlp_ratio: 2.0, vocab_size: 259, seq_len: 32}", model)
            .replace("tokenizer: {kind: bytes}", f"tokenizer: {tokenizer}")
            .replace("steps: 12", "steps: 8"))


@pytest.mark.parametrize("family", ["decoder", "t5"])
def test_sentencepiece_trained_from_the_spec_and_a_user_model_drive_runs(
    tmp_path: Path, family: str, capsys: pytest.CaptureFixture
) -> None:
    trained = "{kind: sentencepiece, train: {vocab_size: 300, model_type: unigram, sample_bytes: 300000}}"
    spec = _workspace(tmp_path, _sentencepiece_spec(family, trained))
    assert main(["run", str(spec), "--set", f"run.output_dir={tmp_path / 'runs'}"]) == 0
    models = list(Path(__import__("os").environ["ENGINE_DATA_CACHE"]).glob("tokenizers/*.model"))
    assert models
    user = tmp_path / "user.model"
    shutil.copyfile(models[0], user)
    spec.write_text(_sentencepiece_spec(family, "{kind: sentencepiece, model: user.model}"))
    assert main(["run", str(spec), "--set", f"run.output_dir={tmp_path / 'runs2'}"]) == 0
    out = capsys.readouterr()
    assert "failed" not in out.out.lower()


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_vit_trains_from_records_of_encoded_png_images(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.data import build_source
    from engine.planning.sizing import ModelDims

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(192, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, size=192)
    records = [{"bytes": _png(image), "path": f"{i}.png"} for i, image in enumerate(images)]
    (tmp_path / "images").mkdir()
    for part in range(2):
        rows = slice(part * 96, (part + 1) * 96)
        table = pa.table({"image": records[rows], "label": labels[rows].tolist()})
        pq.write_table(table, tmp_path / "images" / f"part-{part}.parquet")
    dims = ModelDims("vit", 32, 2, 16, 64, 2, image_size=8, patch_size=4, channels=3, num_classes=4)
    source = build_source("image_records", {"paths": ["images"], "eval_batch_size": 16}, dims, 8, 0, tmp_path)
    batch = source.batch(0)
    for row in range(8):
        index = source.order.train_example(row)
        assert np.allclose(batch["images"][row], images[index] / 255.0, atol=1e-6)  # PNG is lossless
        assert batch["labels"][row].argmax() == labels[index] and batch["labels"][row].sum() == 1
    spec = (Path(__file__).parent / "fixtures" / "run" / "tiny_vit.yaml").read_text().replace(
        "source: {kind: synthetic_images, seed: 0, eval_examples: 32, eval_batch_size: 16}",
        "source: {kind: image_records, paths: [images], eval_batch_size: 16}",
    ).replace("model.nonzeros: [1000, 2000]", "model.nonzeros: [1000]").replace(
        "sparsity.level: [0.0, 0.875]", "sparsity.level: [0.5]")
    (tmp_path / "spec.yaml").write_text(spec)
    assert main(["run", str(tmp_path / "spec.yaml"), "--set", f"run.output_dir={tmp_path / 'runs'}"]) == 0


def test_validate_plan_checks_the_vocabulary_against_the_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trained = "{kind: sentencepiece, train: {vocab_size: 400}}"
    spec = _workspace(tmp_path, _sentencepiece_spec("t5", trained))
    assert main(["validate", "--plan", str(spec)]) == 1
    both = "".join(capsys.readouterr())
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), start=1) if "tokenizer:" in text)
    assert f"{spec}:{line}:" in both and "needs 400 token ids plus" in both and "vocab_size is 320" in both
    spec.write_text(_sentencepiece_spec("decoder", "{kind: bytes}").replace("vocab_size: 320", "vocab_size: 200"))
    assert main(["validate", "--plan", str(spec)]) == 1
    assert "needs 259 token ids" in "".join(capsys.readouterr())


def test_image_records_convert_resize_and_name_bad_records(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from engine.data import build_source
    from engine.errors import UserError
    from engine.planning.sizing import ModelDims

    gray = np.full((16, 16), 200, np.uint8)  # grayscale at twice the model's size, as JPEG
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=95)
    records = [buffer.getvalue()] * 40
    pq.write_table(pa.table({"img": records, "tags": [[0, 2]] * 40}), tmp_path / "jpeg.parquet")
    dims = ModelDims("vit", 32, 2, 16, 64, 2, image_size=8, patch_size=4, channels=3, num_classes=4)
    settings = {"paths": ["jpeg.parquet"], "image_field": "img", "label_field": "tags", "eval_batch_size": 8}
    batch = build_source("image_records", settings, dims, 4, 0, tmp_path).batch(0)
    assert batch["images"].shape == (4, 8, 8, 3) and np.allclose(batch["images"], 200 / 255, atol=3 / 255)
    assert (batch["labels"] == np.array([1, 0, 1, 0], np.float32)).all()  # a list of ids is multi-hot
    pq.write_table(pa.table({"img": [b"not an image"] * 40, "tags": [1] * 40}), tmp_path / "bad.parquet")
    source = build_source("image_records", {**settings, "paths": ["bad.parquet"]}, dims, 4, 0, tmp_path)
    with pytest.raises(UserError, match=r"bad\.parquet: image \d+: not a decodable image"):
        source.batch(0)
    pq.write_table(pa.table({"img": records, "tags": [7] * 40}), tmp_path / "range.parquet")
    with pytest.raises(UserError, match="label id 7 is out of range for 4 classes"):
        build_source("image_records", {**settings, "paths": ["range.parquet"]}, dims, 4, 0, tmp_path)


@pytest.mark.parametrize(("tokenizer", "message"), [
    ("{kind: sentencepiece}", "exactly one of `model` (a .model file) and `train`"),
    ("{kind: sentencepiece, model: a.model, train: {vocab_size: 8000}}", "exactly one of `model`"),
    ("{kind: sentencepiece, train: {vocab_size: 8000, model_type: wordpiece}}", "model_type"),
    ("{kind: huggingface}", "file"),
])
def test_tokenizer_specs_are_checked_at_their_line(tmp_path: Path, tokenizer: str, message: str) -> None:
    from spec.loading import check_file

    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.read_text().replace("tokenizer: {kind: bytes}", f"tokenizer: {tokenizer}"))
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), start=1) if "tokenizer:" in text)
    [issue] = check_file(spec)
    assert issue.origin.line == line and message in issue.message, str(issue)
