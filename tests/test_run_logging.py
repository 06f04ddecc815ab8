"""Where a run's scalars go besides metrics.jsonl: TensorBoard event files (read back with
TensorBoard's own reader) and W&B in offline mode (read back from its run file)."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from helpers import final_params
from interrupt import Interrupted, interrupt_at  # tests/ is on sys.path under pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from engine.errors import UserError
from engine.planning.plan import RunPlan, plan_experiment
from engine.sparsity import sparsified_tree
from engine.training import loop
from engine.training.build import build_setup
from engine.training.loop import train_run
from engine.training.run_log import TAGS, read_records, trim_events

TINY_VIT = Path(__file__).parent / "fixtures" / "run" / "tiny_vit.yaml"
PEAK, WARMUP = 3e-3, 4  # a cosine rate: every logged step has its own learning rate


def _run(tmp_path: Path, *overrides: str) -> RunPlan:
    """One tiny ViT run (16 steps, evaluated at 8 and 16, logged at 8, 10 and 16); every test
    uses the same shape and schedule kinds, so they share one compiled program."""
    fixed = ["sweep={grid: {model.d_model: [12], sparsity.level: [0.5]}}",
             f"optimizer.learning_rate={{kind: cosine, peak: {PEAK}, warmup_steps: {WARMUP}}}",
             f"run.output_dir={tmp_path.as_posix()}"]
    (run,) = plan_experiment(TINY_VIT, [*fixed, *overrides], tmp_path)
    return run


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _expected(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as TensorBoard holds it: one series per tag, values as float32."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for key, tag in TAGS.items():
            if key in record:
                series.setdefault(tag, []).append((record["step"], float(np.float32(record[key]))))
    return series


def test_a_run_writes_tensorboard_events_that_match_metrics_jsonl(tmp_path: Path) -> None:
    run = _run(tmp_path)
    setup = build_setup(run)
    train_run(setup, run.run_dir)

    records = _metrics(run.run_dir)
    assert [r["step"] for r in records] == [8, 10, 16]
    scalars = _scalars(run.run_dir)
    assert set(scalars) == {"train/loss", "eval/loss", "train/learning_rate", "train/sparsity",
                            "train/steps_per_s"}
    assert scalars == _expected(records)
    assert [step for step, _ in scalars["eval/loss"]] == [8, 16]
    # The rate of the update that made step k is the schedule's at optax's count k - 1.
    reference = optax.warmup_cosine_decay_schedule(0.0, PEAK, WARMUP, run.steps, 0.0)
    np.testing.assert_allclose([r["learning_rate"] for r in records],
                               [float(reference(r["step"] - 1)) for r in records], rtol=1e-5)
    # The logged sparsity is what the masks hold: the final one is the measured share of zeros.
    sparsity = [r["sparsity"] for r in records]
    assert sparsity == sorted(sparsity) and sparsity[-1] == 0.5
    _, params = final_params(run.run_dir, setup)
    flags = sparsified_tree(params, setup.dims)
    kernels = [p for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(flags), strict=True) if s]
    zeros = sum(p.size - np.count_nonzero(p) for p in kernels) / sum(p.size for p in kernels)
    assert abs(zeros - sparsity[-1]) < 1e-3  # per-tensor rounding of the kept counts only


def test_tensorboard_false_writes_no_event_files(tmp_path: Path) -> None:
    run = _run(tmp_path, "run.tensorboard=false")
    train_run(build_setup(run), run.run_dir)
    assert _metrics(run.run_dir)  # metrics.jsonl as always
    assert not (run.run_dir / "tensorboard").exists()
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_a_resumed_run_shows_every_step_once(tmp_path: Path) -> None:
    """Killed after logging step 10 with its checkpoint at 8: the resumed attempt appends its own
    event file and logs 10 again; the first attempt's step 10 is gone, as in metrics.jsonl."""
    run = _run(tmp_path, "run.checkpoint_every=4")
    with pytest.raises(Interrupted):
        train_run(build_setup(run), run.run_dir, on_progress=interrupt_at(10))
    assert [step for step, _ in _scalars(run.run_dir)["train/loss"]] == [8, 10]
    first_file = next((run.run_dir / "tensorboard").iterdir())
    first_size = first_file.stat().st_size

    assert train_run(build_setup(run), run.run_dir).resumed_from == 8
    files = sorted((run.run_dir / "tensorboard").iterdir())
    assert len(files) == 2 and files[0] == first_file and first_file.stat().st_size < first_size
    records = _metrics(run.run_dir)
    assert [r["step"] for r in records] == [8, 10, 16]
    assert _scalars(run.run_dir) == _expected(records)


def test_trimming_keeps_the_events_up_to_the_step_and_drops_a_torn_tail(tmp_path: Path) -> None:
    from tensorboard.compat.proto import event_pb2

    from engine.training.run_log import TensorBoardLog

    log = TensorBoardLog(tmp_path, resume_step=0)
    for step in (2, 4, 6):
        log.write({"step": step, "train_loss": 1.0 / step})
    log.close(failed=False)
    with open(log.path, "ab") as handle:
        handle.write(struct.pack("<Q", 40)[:5])  # a kill in the middle of a record's header
    trim_events(tmp_path, resume_step=4)
    steps = [event_pb2.Event.FromString(data).step for data in read_records(log.path)]
    assert steps == [0, 2, 4]  # the file_version event, then the kept steps
    assert log.path.stat().st_size == sum(len(data) + 16 for data in read_records(log.path))


def test_only_the_primary_process_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "is_primary_process", lambda: False)
    run = _run(tmp_path)
    train_run(build_setup(run), run.run_dir)
    assert not (run.run_dir / "metrics.jsonl").exists()
    assert not (run.run_dir / "tensorboard").exists()


def test_wandb_without_the_package_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    run = _run(tmp_path, "run.wandb={project: tiny}")
    with pytest.raises(UserError, match=r"pip install 'sparse-scaling-engine\[wandb\]'"):
        build_setup(run)
    assert not run.run_dir.exists()


def _wandb_records(path: Path) -> list:
    """The records of a W&B run file: a 7-byte header, then LevelDB-log chunks (crc32, length,
    type; FULL=1 or FIRST=2, MIDDLE=3, LAST=4) in 32 KiB blocks, each a `Record` proto."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, pending, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def test_wandb_offline_run_holds_the_logged_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = _run(tmp_path / "runs", "run.wandb={project: tiny, mode: offline}")
    train_run(build_setup(run), run.run_dir)
    # finish() returns before W&B's service process has written the run file; at exit, as here,
    # wandb waits for it.
    import wandb

    wandb.teardown()

    (offline,) = (run.run_dir / "wandb").glob(f"offline-run-*-{run.run_id}")
    records = _wandb_records(offline / f"run-{run.run_id}.wandb")
    (meta,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (meta.run_id, meta.display_name, meta.run_group) == (run.run_id, run.run_id, "tiny_vit")
    config = {item.key: json.loads(item.value_json) for item in meta.config.update}
    assert config["sparsity"] == 0.5 and config["steps"] == 16 and config["run_id"] == run.run_id
    assert config["spec"]["optimizer"]["learning_rate"]["kind"] == "cosine"

    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item}
            history[record.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
    expected = {r["step"]: {TAGS[k]: v for k, v in r.items() if k in TAGS} for r in _metrics(run.run_dir)}
    assert history == expected
