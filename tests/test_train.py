"""The training loop: smoke runs per family, exact resume, one trace, divergence."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import final_params
from interrupt import Interrupted, interrupt_at  # tests/ is on sys.path under pytest

from engine import models
from engine.data import build_source
from engine.planning.plan import RunPlan, plan_experiment
from engine.planning.sizing import ModelDims
from engine.sparsity import GradualSchedule, Unstructured, masked_pruning, sparsified_tree
from engine.sparsity.pruning import with_final_keep
from engine.training.build import build_setup
from engine.training.loop import RunDiverged, RunSetup, forget_programs, programs_for, train_run, warm_programs
from engine.training.optim import adafactor, constant_lr

TINY = {
    "vit": ModelDims("vit", d_model=16, num_heads=2, head_dim=8, mlp_dim=32, layers=1,
                     image_size=8, patch_size=4, channels=3, num_classes=8),
    "t5": ModelDims("t5", d_model=16, num_heads=2, head_dim=8, mlp_dim=32, layers=1, decoder_layers=1,
                    vocab_size=96, seq_len=16, target_len=8, relative_buckets=8),
    "decoder": ModelDims("decoder", d_model=16, num_heads=2, head_dim=8, mlp_dim=32, layers=1,
                         vocab_size=96, seq_len=16),
}
SOURCE = {"vit": "synthetic_images", "t5": "synthetic_tokens", "decoder": "synthetic_tokens"}


def _setup(family: str, steps: int, tmp_path: Path, loss_fn=None, target: float = 0.5) -> RunSetup:
    dims = TINY[family]
    params = models.init_params(dims, jax.random.key(0))
    sparsified = sparsified_tree(params, dims)
    schedule = GradualSchedule(target=target, start_step=2, end_step=max(steps - 2, 3), update_interval=2)

    def optimizer(schedule: GradualSchedule):  # the schedule is traced: an argument of the step
        return masked_pruning(adafactor(constant_lr(0.01)), sparsified, schedule, Unstructured())

    data = build_source(SOURCE[family], {"eval_examples": 16, "eval_batch_size": 8}, dims,
                        batch_size=4, seed=3, base_dir=tmp_path, total_steps=steps)
    return RunSetup(dims=dims, loss_fn=loss_fn or models.loss_fn(dims),
                    metrics_fn=models.metrics_fn(dims), optimizer=optimizer,
                    schedules=with_final_keep(schedule, params, sparsified), data=data,
                    steps=steps, seed=0, eval_every=4, checkpoint_every=4, keep_checkpoints=2,
                    log_every=2)


@pytest.mark.parametrize("family", sorted(TINY))
def test_two_step_smoke_run_per_family(family: str, tmp_path: Path) -> None:
    outcome = train_run(_setup(family, steps=2, tmp_path=tmp_path), tmp_path / "run")
    assert np.isfinite(outcome.final_eval_loss) and outcome.steps == 2
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1


@pytest.mark.parametrize("family", sorted(TINY))
def test_compiled_init_draws_exactly_the_parameters_of_init_params(family: str, tmp_path: Path) -> None:
    """The init program is compiled at a lower LLVM level on CPU (faster to compile): the
    parameters must still be those of the plainly compiled `init_params`, bit for bit."""
    setup = _setup(family, steps=2, tmp_path=tmp_path)
    compiled = programs_for(setup).init(np.int32(7), setup.schedules).params
    plain = models.init_params(setup.dims, jax.random.key(7))
    assert jax.tree.structure(compiled) == jax.tree.structure(plain)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(compiled), jax.tree.leaves(plain), strict=True))


def test_interrupted_run_resumes_bit_identically(tmp_path: Path) -> None:
    steps = 12
    reference = _setup("decoder", steps, tmp_path)
    train_run(reference, tmp_path / "straight")

    with pytest.raises(Interrupted):
        train_run(_setup("decoder", steps, tmp_path), tmp_path / "cut", on_progress=interrupt_at(6))
    resumed = train_run(_setup("decoder", steps, tmp_path), tmp_path / "cut")
    assert resumed.resumed_from == 4

    step_a, params_a = final_params(tmp_path / "straight", reference)
    step_b, params_b = final_params(tmp_path / "cut", reference)
    assert step_a == step_b == steps
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(a, b)
    # pruning happened inside the interrupted window, and the target is reached exactly
    kernel = params_b["decoder"]["block_0"]["mlp"]["fc1"]["kernel"]
    assert np.count_nonzero(kernel) == round(0.5 * kernel.size)


def test_train_step_is_traced_once(tmp_path: Path) -> None:
    traces = []
    dims = TINY["decoder"]
    plain_loss = models.loss_fn(dims)

    def counting_loss(params, batch):
        traces.append(1)  # runs only while tracing
        return plain_loss(params, batch)

    train_run(_setup("decoder", 12, tmp_path, loss_fn=counting_loss), tmp_path / "run")
    assert len(traces) == 1  # 12 steps, 5 of them mask updates, one trace


def test_nan_loss_stops_the_run_with_its_step(tmp_path: Path) -> None:
    plain_loss = models.loss_fn(TINY["decoder"])
    setup = _setup("decoder", 8, tmp_path)
    poisoned = replace(setup, loss_fn=lambda p, b: plain_loss(p, b) * jnp.nan)
    with pytest.raises(RunDiverged) as failure:
        train_run(poisoned, tmp_path / "run")
    assert failure.value.step == 1


TINY_VIT = Path(__file__).parent / "fixtures" / "run" / "tiny_vit.yaml"


def _one_shape_runs(tmp_path: Path, *extra: str) -> list[RunPlan]:
    grid = "sweep={grid: {model.d_model: [12], sparsity.level: [0.5, 0.75], data.steps: [12, 16]}}"
    return plan_experiment(TINY_VIT, [grid, f"run.output_dir={tmp_path.as_posix()}", *extra], tmp_path)


def test_a_warmed_shape_compiles_in_the_background_and_trains_as_compiled_in_its_run(tmp_path: Path) -> None:
    """A sweep warms its next shape while the current one trains: the run then finds its step
    traced and compiled in the background thread, and ends where a run compiling it itself ends."""
    traced_on_main = []
    plain_loss = models.loss_fn(TINY["decoder"])

    def counting_loss(params, batch):
        traced_on_main.append(threading.current_thread() is threading.main_thread())  # runs only while tracing
        return plain_loss(params, batch)

    setup = _setup("decoder", 8, tmp_path, loss_fn=counting_loss)
    forget_programs()
    programs_for(_setup("vit", 8, tmp_path))  # another shape is the current one
    warm_programs(setup)
    warmed = train_run(setup, tmp_path / "warmed").final_eval_loss
    assert traced_on_main == [False]
    forget_programs()
    assert train_run(setup, tmp_path / "cold").final_eval_loss == warmed
    assert traced_on_main == [False, True]


def test_runs_of_one_shape_share_programs_but_train_with_their_own_numbers(tmp_path: Path) -> None:
    """Runs differing only in length and sparsity share one compiled step, and each ends exactly
    where it ends when trained alone: its schedules are arguments, not the first run's constants."""
    runs = _one_shape_runs(tmp_path / "shared")
    runs = [runs[0], runs[-1]]  # (0.5, 12 steps) and (0.75, 16 steps)
    assert (runs[0].spec.sparsity.level, runs[0].steps) != (runs[1].spec.sparsity.level, runs[1].steps)
    forget_programs()
    setups = [build_setup(run) for run in runs]
    assert programs_for(setups[0]) is programs_for(setups[1])
    shared = [train_run(setup, run.run_dir).final_eval_loss for setup, run in zip(setups, runs, strict=True)]
    alone = []
    for run in _one_shape_runs(tmp_path / "alone")[::3]:
        forget_programs()
        alone.append(train_run(build_setup(run), run.run_dir).final_eval_loss)
    assert shared == alone
    assert shared[0] != shared[1]


def test_programs_are_not_shared_across_optimizer_settings(tmp_path: Path) -> None:
    plain = build_setup(_one_shape_runs(tmp_path)[0])
    other = build_setup(_one_shape_runs(tmp_path, "optimizer.b2=0.98")[0])
    longer = build_setup(_one_shape_runs(tmp_path)[1])
    assert plain.optimizer == longer.optimizer and plain.optimizer != other.optimizer
    assert programs_for(plain) is not programs_for(other)


MATCHED_T5 = """
name: matched
model:
  kind: t5
  base: {layers: 1, decoder_layers: 1, num_heads: 2, mlp_ratio: 2.0, vocab_size: 96, seq_len: 16,
         target_len: 8, relative_buckets: 8}
  d_model: 16
sparsity:
  level: 0.75
  targets: backbone_and_matched_embeddings
  schedule: {kind: gmp, start: 0.25, end: 0.5, interval: 2}
optimizer: {kind: adafactor, learning_rate: {kind: constant, value: 0.01}, grad_clip_norm: 1.0}
data: {source: {kind: synthetic_tokens, seed: 0, eval_examples: 16, eval_batch_size: 8}, steps: 8,
       batch_size: 4, eval_every: 4}
"""


def test_matched_t5_embeddings_end_at_their_planned_level(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """targets backbone_and_matched_embeddings: the backbone ends at S, the token embedding and LM
    head at the plan's own level (the smaller dense model's embedding size: 1 - 8/16 here)."""
    spec = tmp_path / "matched.yaml"
    spec.write_text(MATCHED_T5)
    [run] = plan_experiment(spec, [f"run.output_dir={tmp_path / 'runs'}"])
    assert run.embedding_sparsity == pytest.approx(0.5)
    setup = build_setup(run)
    train_run(setup, run.run_dir)
    _, params = final_params(run.run_dir, setup)
    for name, leaf in (("token_embed", params["token_embed"]["embedding"]), ("lm_head", params["lm_head"]["kernel"])):
        assert np.count_nonzero(leaf) == leaf.size // 2, name
    kernels = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
               if "/".join(str(getattr(k, "key", k)) for k in path).endswith("/kernel")
               and any(part in str(path) for part in ("attn", "mlp"))]
    assert kernels and all(np.count_nonzero(k) == round(0.25 * k.size) for k in kernels)
    # `engine inspect` shows the embeddings' own target and keeps them out of N's sparsity.
    import json

    from engine.cli import main
    from engine.study.sweep import write_run_spec

    write_run_spec(run)
    capsys.readouterr()
    assert main(["inspect", str(run.run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["embedding_target_sparsity"] == pytest.approx(0.5)
    assert report["sparsity"] == pytest.approx(0.75)
    matched = {t["path"] for t in report["tensors"] if t["matched_embedding"]}
    assert matched == {"token_embed/embedding", "lm_head/kernel"}
