"""`init: pretrained` (paper section 4.2) and dependencies between specs, on tiny ViTs.

One module-wide working directory: tiny_prune.yaml is first run without its source (a clear stop),
then with --with-deps (the source spec is trained first); later tests reuse those checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from helpers import final_params
from interrupt import Interrupted, interrupt_at  # tests/ is on sys.path under pytest

from engine.cli import main
from engine.errors import UserError
from engine.planning.plan import plan_experiment
from engine.results import sweep_rows
from engine.sparsity import sparsified_tree
from engine.training.build import build_setup
from engine.training.loop import initial_state, train_run, train_step

FIXTURES = Path(__file__).parent / "fixtures" / "run"
SPECS = ("tiny_vit.yaml", "tiny_prune.yaml", "tiny_prune_nm.yaml")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    directory = tmp_path_factory.mktemp("pretrained")
    for name in SPECS:
        shutil.copy(FIXTURES / name, directory / name)
    before = Path.cwd()
    os.chdir(directory)
    try:
        stop_code = main(["run", "tiny_prune.yaml"])
        written_after_stop = sorted(p.name for p in Path(directory, "runs").glob("*")) if Path("runs").exists() else []
        deps_code = main(["run", "tiny_prune.yaml", "--with-deps", "--no-report"])
    finally:
        os.chdir(before)
    return SimpleNamespace(dir=directory, stop_code=stop_code, written_after_stop=written_after_stop,
                           deps_code=deps_code)


@pytest.fixture
def here(work: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    monkeypatch.chdir(work.dir)
    return work


def _source(run):
    return next(p for p in plan_experiment("tiny_vit.yaml") if p.run_id == run.source.run_id)


def test_missing_source_stops_with_the_command_then_with_deps_trains_it_first(here, capsys) -> None:
    assert here.stop_code == 1 and here.written_after_stop == []  # nothing of either sweep written
    assert here.deps_code == 0
    source_rows = sweep_rows(here.dir / "runs" / "tiny_vit")
    pruned_rows = sweep_rows(here.dir / "runs" / "tiny_prune")
    assert len(source_rows) == 4 and len(pruned_rows) == 1
    source = next(r for r in source_rows if r["sparsity"] == 0 and r["nonzeros"] == 1152)
    assert pruned_rows[0]["source_run_id"] == source["run_id"]
    assert pruned_rows[0]["pretrain_data"] == source["data"] == 128
    assert pruned_rows[0]["steps"] == 8 and pruned_rows[0]["init"] == "pretrained"  # 0.5 x 16 steps


def test_stop_message_names_what_to_run(tmp_path: Path, monkeypatch, capsys) -> None:
    for name in SPECS:
        shutil.copy(FIXTURES / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "tiny_prune.yaml"]) == 1
    err = capsys.readouterr().err
    assert "tiny_vit.yaml (init.source): 1 of its 1 source run(s) not done" in err
    assert "engine run tiny_vit.yaml" in err and "--with-deps" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_plan_lists_the_dependency_and_the_source(here, capsys) -> None:
    capsys.readouterr()
    assert main(["plan", "tiny_prune.yaml", "--json", "--set", "sweep.grid={sparsity.level: [0.75, 0.5]}"]) == 0
    document = json.loads(capsys.readouterr().out)
    (dependency,) = document["dependencies"]  # the new 0.5 run will read its source
    assert dependency["spec"] == "tiny_vit.yaml" and dependency["ready"] is True
    done, new = document["runs"]
    assert new["source"]["run_id"] == dependency["runs"][0] and new["source"]["step"] == 16
    assert done["steps"] == 8 and done["status"]["state"] == "done" and new["status"]["state"] == "new"


def _checkpoint_spec(here, directory: Path, step: int, checkpoints: Path) -> Path:
    """tiny_prune with its source given as a bare checkpoint directory and step."""
    spec = directory / f"from_step_{step}.yaml"
    spec.write_text((here.dir / "tiny_prune.yaml").read_text().replace(
        "source: {kind: run, spec: tiny_vit.yaml, where: {model.nonzeros: 1000, sparsity.level: 0.0}}",
        f"source: {{kind: checkpoint, path: {checkpoints.as_posix()}, step: {step}}}",
    ).replace("extends: tiny_vit.yaml", f"extends: {(here.dir / 'tiny_vit.yaml').as_posix()}"))
    return spec


def test_source_identity_is_part_of_the_run_id(here, tmp_path: Path) -> None:
    (pruned,) = plan_experiment("tiny_prune.yaml")
    # the same run however its spec and source paths are spelt
    (absolute,) = plan_experiment(here.dir / "tiny_prune.yaml", ["init.source.spec=./tiny_vit.yaml"])
    assert absolute.run_id == pruned.run_id
    # only the source differs (the same model, the step it is taken at): another run
    checkpoints = here.dir / pruned.source.checkpoints
    (at_16,) = plan_experiment(_checkpoint_spec(here, tmp_path, 16, checkpoints))
    (at_8,) = plan_experiment(_checkpoint_spec(here, tmp_path, 8, checkpoints))
    assert at_16.run_id != at_8.run_id
    # a bare checkpoint is known by its contents (manifest digest), not by where it lies
    moved = tmp_path / "moved"
    shutil.copytree(checkpoints, moved)
    (moved_16,) = plan_experiment(_checkpoint_spec(here, tmp_path / ".", 16, moved))
    assert moved_16.run_id == at_16.run_id


def test_a_source_of_another_width_is_refused_at_plan_time(here) -> None:
    with pytest.raises(UserError, match=r"parameter encoder/block_0/attn/key/bias is 12 in run \w+ of "
                                        r"tiny_vit.yaml but 16 in this model"):
        plan_experiment("tiny_prune.yaml", ["model.d_model=16"])


def test_the_pruned_run_continues_the_source_data_stream(here) -> None:
    (run,) = plan_experiment("tiny_prune.yaml")
    source = _source(run)
    assert run.data_offset == source.steps == 16  # same batch size: exactly where the source stopped
    ours, theirs = build_setup(run).data.batch(0), build_setup(source).data.batch(16)
    for key in theirs:
        np.testing.assert_array_equal(np.asarray(ours[key]), np.asarray(theirs[key]))


def test_params_only_restore_fresh_optimizer_masks_from_restored_weights(here) -> None:
    (run,) = plan_experiment("tiny_prune.yaml", ["sparsity.schedule={kind: oneshot, at: 0.0}"])
    setup = build_setup(run)
    source = _source(run)
    _, source_params = final_params(source.run_dir, build_setup(source))
    state = initial_state(setup)
    # the source's parameters exactly, a fresh step counter, optimizer state and (dense) masks
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(source_params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert int(state.step) == 0 and int(state.opt_state.count) == 0
    assert all(bool(np.all(m)) for m in jax.tree.leaves(state.opt_state.masks))
    moments = [np.asarray(x) for x in jax.tree.leaves(state.opt_state.inner_state) if np.ndim(x) > 0]
    assert moments and all(not np.any(x) for x in moments)  # no optimizer memory carried over

    state, _ = train_step(state, setup.data.batch(0), setup.loss_fn, setup.optimizer(setup.schedules))
    sparsified = sparsified_tree(source_params, run.dims)
    checked = 0
    for mask, weight, is_sparse in zip(jax.tree.leaves(state.opt_state.masks), jax.tree.leaves(source_params),
                                       jax.tree.leaves(sparsified), strict=True):
        if not is_sparse:
            continue
        mask, magnitude = np.asarray(mask), np.abs(weight)
        assert mask.sum() == round(0.25 * weight.size)  # 75% pruned at step 0 of this run's clock
        assert magnitude[mask].min() >= magnitude[~mask].max()  # the largest *restored* weights kept
        checked += 1
    assert checked >= 4


def test_schedule_clock_restarts_and_the_pruned_run_reaches_its_level(here, capsys) -> None:
    run_dir = next((here.dir / "runs" / "tiny_prune").glob("*/status.json")).parent
    # its own clock from 0, not the source's step 16: checkpoints at 4 and 8 of 8 steps
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [4, 8]
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [8]
    capsys.readouterr()
    assert main(["inspect", str(run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["step"] == 8
    sparse = [t for t in report["tensors"] if t["sparsified"]]
    assert sparse and all(abs(t["nonzeros"] - 0.25 * np.prod(t["shape"])) <= 1 for t in sparse)


def test_interrupted_pruning_run_resumes_from_its_own_checkpoint(here, tmp_path: Path) -> None:
    (run,) = plan_experiment("tiny_prune.yaml")
    setup = replace(build_setup(run), log_every=2)  # progress (and the kill) every 2 steps
    train_run(setup, tmp_path / "straight")

    with pytest.raises(Interrupted):
        train_run(setup, tmp_path / "cut", on_progress=interrupt_at(6))

    def must_not_load() -> None:
        raise AssertionError("a resumed run must continue from its checkpoint, not reload its source")

    resumed = train_run(replace(setup, load_params=must_not_load), tmp_path / "cut")
    assert resumed.resumed_from == 4
    _, straight = final_params(tmp_path / "straight", setup)
    _, cut = final_params(tmp_path / "cut", setup)
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(cut), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nm_masks_hold_after_restore_and_training(here, capsys) -> None:
    assert main(["run", "tiny_prune_nm.yaml", "--no-report"]) == 0
    run_dir = next((here.dir / "runs" / "tiny_prune_nm").glob("*/status.json")).parent
    capsys.readouterr()
    assert main(["inspect", str(run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pattern"] == "2:4" and report["nm_valid"] is True
    assert report["sparsity"] == pytest.approx(0.5)


def test_shape_mismatch_names_the_tensor_and_writes_nothing(here, tmp_path: Path, capsys) -> None:
    (run,) = plan_experiment("tiny_prune.yaml")
    checkpoints = (here.dir / run.source.checkpoints).as_posix()
    spec = tmp_path / "wrong_width.yaml"
    spec.write_text((here.dir / "tiny_prune.yaml").read_text().replace(
        "source: {kind: run, spec: tiny_vit.yaml, where: {model.nonzeros: 1000, sparsity.level: 0.0}}",
        f"source: {{kind: checkpoint, path: {checkpoints}, step: 16}}",
    ).replace("extends: tiny_vit.yaml", f"extends: {here.dir / 'tiny_vit.yaml'}").replace(
        "model: {d_model: 12}", "model: {d_model: 16}"))
    capsys.readouterr()
    assert main(["run", str(spec), "--set", f"run.output_dir={tmp_path / 'out'}"]) == 1
    err = capsys.readouterr().err
    assert "parameter encoder/block_0/attn/key/bias has shape (12,) in the checkpoint but (16,) in this model" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_missing_step_and_unfinished_source_are_clear_errors(here) -> None:
    (run,) = plan_experiment("tiny_prune.yaml")
    # a run not started yet (no checkpoint of its own), so its source is read
    run = replace(run, run_dir=Path("runs/not-started"), status=replace(run.status, state="new"))
    missing = replace(run, source=replace(run.source, step=999))
    with pytest.raises(UserError, match=r"no checkpoint at step 999 .*saved steps: 8, 16"):
        build_setup(missing)
    unfinished = replace(run, source=replace(run.source, status=replace(run.source.status, state="partial", step=8)))
    with pytest.raises(UserError, match=r"is not finished \(partial at step 8\).*engine run tiny_vit.yaml"):
        build_setup(unfinished)
    failed = replace(run, source=replace(run.source, status=replace(run.source.status, state="failed")))
    with pytest.raises(UserError, match=r"engine run tiny_vit.yaml --retry-failed"):
        build_setup(failed)


def test_dependencies_follow_what_the_runs_still_need(here, tmp_path: Path, monkeypatch, capsys) -> None:
    shutil.copytree(here.dir, tmp_path / "copy")
    monkeypatch.chdir(tmp_path / "copy")
    (source,) = [p for p in plan_experiment("tiny_vit.yaml") if p.run_id == plan_experiment("tiny_prune.yaml")[0].source.run_id]
    shutil.rmtree(source.run_dir / "checkpoints" / "16")
    # the pruned run is done: its report needs nothing of the source any more
    capsys.readouterr()
    assert main(["plan", "tiny_prune.yaml", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dependencies"] == []
    assert main(["run", "tiny_prune.yaml"]) == 0
    # a new pruned run (another level) does need it, and says what is missing
    assert main(["run", "tiny_prune.yaml", "--set", "sweep.grid={sparsity.level: [0.5]}"]) == 1
    assert f"final checkpoint is gone ({source.run_id})" in capsys.readouterr().err
