"""Declared means done: every field of the spec changes what the engine builds, plans, fits or
reports, the way its description says.

Each test here sets a field to two values in a tiny spec and asserts that the built thing differs
as described: the optimizer's update, the schedule's value at a step, the batch, the plan, the fit,
the report. No training: objects are built and at most a few optimizer updates are applied, and fits
are made from results that follow a known law. COVERAGE maps every field of the JSON schema to the
test that shows its effect (here or in another module); test_every_schema_field_has_an_effect_test
fails when the schema gains a field the table does not list, so a new field comes with its test.
"""

from __future__ import annotations

import ast
import json
import shutil
import time
from io import StringIO
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rich.console import Console

from engine.cli.schema import experiment_schema
from engine.errors import UserError
from engine.fit import paper
from engine.fit.law import LawCoefficients, predict_loss
from engine.planning.checks import plan_issues
from engine.planning.plan import RunPlan, plan_experiment
from engine.results import append_result
from engine.study.analysis import analyse

TESTS = Path(__file__).resolve().parent
RUN_FIXTURES = TESTS / "fixtures" / "run"

# A tiny ViT on synthetic images: builds in well under a second.
VIT = """\
name: effect
model:
  kind: vit
  base: {layers: 1, num_heads: 2, mlp_ratio: 2.0, image_size: 8, patch_size: 4, channels: 3, num_classes: 4}
  d_model: 8
sparsity:
  level: 0.5
  pattern: {kind: unstructured}
  schedule: {kind: gmp, start: 0.25, end: 0.75, interval: 2}
optimizer:
  kind: adamw
  learning_rate: {kind: constant, value: 3.0e-3}
data:
  source: {kind: synthetic_images, seed: 0, eval_examples: 32, eval_batch_size: 16}
  steps: 16
  batch_size: 8
  eval_every: 8
analysis: {fit: null}
"""


def write(tmp_path: Path, text: str, name: str = "effect.yaml") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_text(text)
    return path


def plan_one(tmp_path: Path, *overrides: str, text: str = VIT) -> RunPlan:
    """The single run of a spec without a sweep, with `--set` overrides."""
    [run] = plan_experiment(write(tmp_path, text), [f"run.output_dir={tmp_path / 'runs'}", *overrides])
    return run


# --- init.budget_fraction and the source's step ---------------------------------------------------


@pytest.fixture
def prune_specs(tmp_path: Path) -> Path:
    for name in ("tiny_vit.yaml", "tiny_prune.yaml"):
        shutil.copy(RUN_FIXTURES / name, tmp_path / name)
    return tmp_path


def test_budget_fraction_is_a_share_of_the_source_data_not_of_its_steps(prune_specs: Path) -> None:
    """The source trained 16 steps of 8 examples (D = 128); half its D at batch 8 is 8 steps, at
    batch 4 it is 16 steps (a share of the steps would give 8 again)."""
    spec = prune_specs / "tiny_prune.yaml"
    out = f"run.output_dir={prune_specs / 'runs'}"
    [half] = plan_experiment(spec, [out], prune_specs)
    [small_batch] = plan_experiment(spec, [out, "data.batch_size=4"], prune_specs)
    [quarter] = plan_experiment(spec, [out, "init.budget_fraction=0.25"], prune_specs)
    assert half.source is not None and half.source.data == 128
    assert (half.steps, half.data) == (8, 64)
    assert (small_batch.steps, small_batch.data) == (16, 64)
    assert (quarter.steps, quarter.data) == (4, 32)


def test_a_checkpoint_source_step_is_loaded_and_budgets_by_steps(prune_specs: Path) -> None:
    """A bare checkpoint has no recorded D: budget_fraction takes that share of its step, and the
    step is the one loaded (part of the run's identity)."""
    spec = prune_specs / "tiny_prune.yaml"
    plans = {}
    for step in (10, 20):
        source = f"init.source={{kind: checkpoint, path: ckpt, step: {step}}}"
        [plans[step]] = plan_experiment(spec, [f"run.output_dir={prune_specs / 'runs'}", source], prune_specs)
    assert [plans[s].source.step for s in (10, 20)] == [10, 20]
    assert [plans[s].steps for s in (10, 20)] == [5, 10]
    assert plans[10].run_id != plans[20].run_id


# --- analysis: fits and reports from results that follow a known law ------------------------------

SWEEP = VIT.replace("analysis: {fit: null}\n", """\
sweep:
  grid:
    model.d_model: [8, 12, 16]
    sparsity.level: [0.0, 0.5, 0.875]
    data.steps: [16, 32]
analysis:
  fit: {starts: 4, bootstrap: 0, holdout: {kind: none}}
  gains: null
  optimal_sparsity: null
""")


def sweep_with_results(tmp_path: Path, *overrides: str, pretrained: int = 0, law: LawCoefficients = paper.T5_C4,
                       only: Any = None) -> tuple[list[RunPlan], Path]:
    """The planned sweep and a results.jsonl whose losses follow `law` exactly (for the runs `only`
    accepts, default all); `pretrained` more rows say they come from pruned pretrained runs (with
    their source's D)."""
    runs = plan_experiment(write(tmp_path, SWEEP), [f"run.output_dir={tmp_path / 'runs'}", *overrides])
    sweep_dir = runs[0].run_dir.parent
    for run in runs if only is None else only(runs):
        n, d = run.nonzeros * 1e4, run.data * 1e4
        loss = float(predict_loss(law, np.array(run.sparsity), np.array(n), np.array(d)))
        append_result(sweep_dir, {"sparsity": run.sparsity, "nonzeros": n, "data": d, "loss": loss,
                                  "run_id": run.run_id, "init": run.init, "d_model": run.dims.d_model})
    for index in range(pretrained):
        n, d = 4e5 * (index + 1), 2e6
        loss = float(predict_loss(law, np.array(0.5), np.array(n), np.array(40 * d)))
        append_result(sweep_dir, {"sparsity": 0.5, "nonzeros": n, "data": d, "loss": loss, "run_id": f"pretrained{index}",
                                  "init": "pretrained", "pretrain_data": 20 * d, "d_model": 8 * (index + 1)})
    return runs, sweep_dir


def analysed(tmp_path: Path, *overrides: str, **results: Any) -> tuple[dict | None, str]:
    """fit.json (None when not written) and index.md of the sweep's analysis."""
    runs, sweep_dir = sweep_with_results(tmp_path, *overrides, **results)
    report = analyse(runs, sweep_dir, Console(file=StringIO()))
    assert report is not None
    fit = report / "fit.json"
    return (json.loads(fit.read_text()) if fit.is_file() else None), (report / "index.md").read_text()


TABLE4 = "Pruned pretrained models vs sparsifying from scratch (Table 4)"


def test_pretrained_vs_scratch_adds_table4_through_its_law_and_keeps_the_sweeps_own_fit(tmp_path: Path) -> None:
    """With `fit` set, the sweep's own fit is still made and reported; Table 4 appears once, through
    the declared law (not through the own fit); with `fit: null` Table 4 is the whole report."""
    (tmp_path / "law.json").write_text(json.dumps({"coefficients": paper.T5_C4.as_dict()}))
    other = LawCoefficients(**{**paper.T5_C4.as_dict(), "c": paper.T5_C4.c * 0.9})
    (tmp_path / "other.json").write_text(json.dumps({"coefficients": other.as_dict()}))
    declared = "analysis.pretrained_vs_scratch={law: {kind: fit_file, path: law.json}}"
    fit, report = analysed(tmp_path / "a", declared.replace("law.json", "../law.json"), pretrained=2)
    assert fit is not None and fit["rows_used"] == 18  # the 18 from-scratch runs, not the pretrained rows
    assert "Sparse scaling-law fit" in report and report.count(TABLE4) == 1
    assert "law.json" in report and "this fit (from-scratch rows only)" not in report
    fit, own = analysed(tmp_path / "b", pretrained=2)  # undeclared: Table 4 through the own fit
    assert fit is not None and own.count(TABLE4) == 1 and "this fit (from-scratch rows only)" in own
    fit, alone = analysed(tmp_path / "c", declared.replace("law.json", "../law.json"), "analysis.fit=null",
                          pretrained=2)
    assert fit is None and TABLE4 in alone and "Sparse scaling-law fit" not in alone
    # `law` decides the numbers: another law gives other data equivalences.
    _, by_other = analysed(tmp_path / "d", declared.replace("law.json", "../other.json"), "analysis.fit=null",
                           pretrained=2)
    assert by_other != alone and "other.json" in by_other


def test_optimal_sparsity_rows_are_its_own_sparsities_even_without_gains(tmp_path: Path) -> None:
    fit, report = analysed(tmp_path / "a", "analysis.optimal_sparsity={sparsities: [0.6, 0.9], costs: [sparse]}")
    findings = fit["findings"] if fit else {}
    assert findings["optimal_sparsity_chinchilla_multiples"].keys() == {"sparse"}
    assert findings["optimal_sparsity_chinchilla_multiples"]["sparse"].keys() == {"0.6", "0.9"}
    assert findings["gains"] == {} and "Optimal sparsity (sec. 3.3" in report
    fit, _ = analysed(tmp_path / "b", "analysis.optimal_sparsity={}", "analysis.gains={sparsities: [0.3]}")
    multiples = fit["findings"]["optimal_sparsity_chinchilla_multiples"] if fit else {}
    assert multiples.keys() == {"dense", "sparse"} and multiples["dense"].keys() == {"0.5", "0.75", "0.875"}
    assert fit is not None and fit["findings"]["gains"].keys() == {"0.3"}


# --- run policy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["ray", "slurm"])
def test_fail_fast_is_refused_by_the_executors_that_start_every_run_at_once(tmp_path: Path, executor: str) -> None:
    """fail_fast can only hold back runs that have not started; ray and slurm submit them all, so
    they refuse it before submitting anything (the local executor's stop is
    test_reliability_runs.py::test_fail_fast_stops_the_sweep_at_the_first_failure)."""
    from engine.study.executors import execute

    spec = write(tmp_path, VIT)
    runs = plan_experiment(spec, [f"run.output_dir={tmp_path / 'runs'}", "run.failure_policy=fail_fast"])
    with pytest.raises(UserError, match=f"fail_fast.*--executor {executor}"):
        execute(executor, runs, spec, [], Console(file=StringIO()), {})
    assert not (tmp_path / "runs").exists()


# --- optimizer: learning-rate schedules --------------------------------------------------------


def test_warmup_and_cooldown_longer_than_a_run_are_refused_at_warmup_steps(tmp_path: Path) -> None:
    """16 steps: warmup 12 + cooldown round(0.25 x 16) = 4 fit, warmup 13 does not (it used to be cut
    short silently). The plan check names the YAML line; building the run refuses it too."""
    from engine.training.build import build_setup

    rate = "optimizer.learning_rate={kind: warmup_constant_cooldown, peak: 0.01, warmup_steps: %d, cooldown_fraction: 0.25}"
    spec = write(tmp_path, VIT)
    assert plan_issues(spec, [rate % 12]) == []
    [issue] = plan_issues(spec, [rate % 13])
    assert "warmup_steps 13 and a cooldown of 4 steps" in issue.message and "16 steps" in issue.message
    assert issue.at == "optimizer.learning_rate.warmup_steps"
    with pytest.raises(UserError, match="warmup_steps 13"):
        build_setup(plan_one(tmp_path, rate % 13))
    # Written in the file, the issue points at the warmup_steps line of the file.
    written = VIT.replace("learning_rate: {kind: constant, value: 3.0e-3}",
                          "learning_rate:\n    kind: warmup_constant_cooldown\n    peak: 0.01\n    warmup_steps: 13\n"
                          "    cooldown_fraction: 0.25")
    [issue] = plan_issues(write(tmp_path, written, "written.yaml"), [])
    assert issue.origin.line == written.splitlines().index("    warmup_steps: 13") + 1


def schedule_values(run: RunPlan) -> np.ndarray:
    """The built learning rate at every step of the run."""
    from engine.training.build import build_learning_rate

    schedule = build_learning_rate(run.spec.optimizer.learning_rate, run.steps)
    return np.array([float(schedule(jnp.asarray(step))) for step in range(run.steps)])


RATES = {
    "constant": "{kind: constant, value: 0.01}",
    "rsqrt": "{kind: rsqrt, peak: 0.01, warmup_steps: 4}",
    "cosine": "{kind: cosine, peak: 0.01, warmup_steps: 4}",
    "warmup_constant_cooldown": "{kind: warmup_constant_cooldown, peak: 0.01, warmup_steps: 4}",
}


@pytest.mark.parametrize("kind, field, value, changed_at", [
    ("constant", "value", "0.02", 0),
    ("rsqrt", "peak", "0.02", 0),
    ("rsqrt", "warmup_steps", "8", 6),  # held at the peak up to warmup_steps, then 1/sqrt(t)
    ("rsqrt", "linear_warmup", "true", 1),  # ramps instead of holding
    ("cosine", "peak", "0.02", 4),
    ("cosine", "warmup_steps", "2", 3),
    ("cosine", "final_fraction", "0.5", 15),  # decays to half the peak, not to 0
    ("warmup_constant_cooldown", "peak", "0.02", 8),
    ("warmup_constant_cooldown", "warmup_steps", "2", 3),
    ("warmup_constant_cooldown", "cooldown_fraction", "0.5", 9),  # cooldown from step 8, not 13
])
def test_learning_rate_field_changes_the_schedule_at_the_step_it_governs(
    tmp_path: Path, kind: str, field: str, value: str, changed_at: int
) -> None:
    rate = f"optimizer.learning_rate={RATES[kind]}"
    before = schedule_values(plan_one(tmp_path, rate))
    after = schedule_values(plan_one(tmp_path, rate, f"optimizer.learning_rate.{field}={value}"))
    assert before[changed_at] != pytest.approx(after[changed_at])
    if kind in ("cosine", "warmup_constant_cooldown") and field != "peak":
        assert before.max() == pytest.approx(after.max())  # the same peak, reached or left elsewhere


def test_learning_rate_kind_chooses_the_schedule(tmp_path: Path) -> None:
    shapes = {kind: schedule_values(plan_one(tmp_path, f"optimizer.learning_rate={rate}"))
              for kind, rate in RATES.items()}
    assert len({tuple(np.round(values, 9)) for values in shapes.values()}) == len(RATES)


# --- optimizer: the update it makes ----------------------------------------------------------------

ADAMW = "optimizer={kind: adamw, learning_rate: {kind: constant, value: 0.01}}"
ADAFACTOR = "optimizer={kind: adafactor, learning_rate: {kind: constant, value: 0.01}}"


def params_after_updates(run: RunPlan) -> np.ndarray:
    """A half-pruned 8x8 kernel after three updates of the optimizer built from the run's spec
    (engine.training.build.inner_optimizer, what the run's masked pruning wraps), given its masks,
    with fixed gradients of very different sizes (so that clipping matters)."""
    from engine.training.build import build_learning_rate, inner_optimizer

    optimizer = inner_optimizer(run.spec.optimizer, build_learning_rate(run.spec.optimizer.learning_rate, run.steps))
    mask = (jnp.arange(8)[:, None] + jnp.arange(8)[None, :]) % 2 == 0
    params = {"w": jnp.where(mask, 0.5 + jax.random.uniform(jax.random.key(0), (8, 8)), 0.0)}

    @jax.jit
    def three_updates(params: dict) -> dict:
        state = optimizer.init(params)
        for step, scale in enumerate((100.0, 1.0, 0.01)):
            grads = {"w": scale * jax.random.normal(jax.random.key(step + 1), (8, 8))}
            updates, state = optimizer.update(grads, state, params, masks={"w": mask})
            params = {"w": params["w"] + updates["w"] * mask}
        return params

    return np.asarray(three_updates(params)["w"])


@pytest.mark.parametrize("base, field, value", [
    (ADAMW, "b1", "0.5"),
    (ADAMW, "b2", "0.5"),
    (ADAMW, "eps", "1.0"),
    (ADAMW, "weight_decay", "0.5"),
    (ADAMW, "grad_clip_norm", "0.001"),
    (ADAFACTOR, "relative_step", "false"),
    (ADAFACTOR, "sparsity_aware_rms", "false"),
    (ADAFACTOR, "clip_threshold", "0.01"),
    (ADAFACTOR, "decay_rate", "0.3"),
    (ADAFACTOR, "beta2_cap", "0.1"),
    (ADAFACTOR, "momentum", "0.9"),
    (ADAFACTOR, "eps", "1.0"),
    (ADAFACTOR, "min_param_scale", "10.0"),
    (ADAFACTOR, "weight_decay", "0.5"),
    (ADAFACTOR, "grad_clip_norm", "0.001"),
])
def test_optimizer_field_changes_the_update(tmp_path: Path, base: str, field: str, value: str) -> None:
    before = params_after_updates(plan_one(tmp_path, base))
    after = params_after_updates(plan_one(tmp_path, base, f"optimizer.{field}={value}"))
    assert not np.allclose(before, after, rtol=1e-6, atol=0)


def test_optimizer_kind_chooses_the_optimizer(tmp_path: Path) -> None:
    adamw = params_after_updates(plan_one(tmp_path, ADAMW))
    adafactor = params_after_updates(plan_one(tmp_path, ADAFACTOR))
    assert not np.allclose(adamw, adafactor, rtol=1e-6, atol=0)


# --- data: the built-in synthetic tasks --------------------------------------------------------------

TOKENS = """\
name: tokens
model:
  kind: decoder
  base: {layers: 1, num_heads: 2, mlp_ratio: 2.0, vocab_size: 96, seq_len: 16}
  d_model: 8
sparsity: {level: 0.0, schedule: {kind: dense}}
optimizer:
  kind: adamw
  learning_rate: {kind: constant, value: 1.0e-3}
data:
  source: {kind: synthetic_tokens, eval_examples: 32, eval_batch_size: 16}
  steps: 16
  batch_size: 4
  eval_every: 8
analysis: {fit: null}
"""


def first_batches(run: RunPlan) -> tuple[np.ndarray, ...]:
    """The first training batch and the validation set of the run's built data source."""
    from engine.training.build import build_setup

    data = build_setup(run).data
    arrays = [np.asarray(value) for value in data.batch(0).values()]
    arrays += [np.asarray(value) for batch in data.eval_batches() for value in batch.values()]
    return tuple(arrays)


def same_data(first: tuple[np.ndarray, ...], second: tuple[np.ndarray, ...]) -> bool:
    return len(first) == len(second) and all(a.shape == b.shape and np.allclose(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("text, field, value", [
    (VIT, "seed", "1"),
    (VIT, "teacher_width", "16"),
    (VIT, "teacher_layers", "2"),
    (VIT, "teacher_frequency", "2.0"),
    (VIT, "feature_decay", "0.0"),
    (VIT, "label_temperature", "3.0"),
    (VIT, "patterns", "8"),
    (VIT, "active_patterns", "1"),
    (VIT, "pixel_noise", "0.0"),
    (VIT, "smoothness", "0.5"),
    (VIT, "eval_examples", "48"),
    (VIT, "eval_batch_size", "8"),
    (TOKENS, "seed", "1"),
    (TOKENS, "symbols", "32"),
    (TOKENS, "order", "1"),
    (TOKENS, "concentration", "0.1"),
    (TOKENS, "backoff", "0.0"),
    (TOKENS, "smoothing", "0.5"),
    (TOKENS, "zipf_exponent", "3.0"),
    (TOKENS, "eval_examples", "48"),
    (TOKENS, "eval_batch_size", "8"),
])
def test_synthetic_source_field_changes_the_data(tmp_path: Path, text: str, field: str, value: str) -> None:
    before = first_batches(plan_one(tmp_path, text=text))
    after = first_batches(plan_one(tmp_path, f"data.source.{field}={value}", text=text))
    assert not same_data(before, after)


def test_seed_draws_other_initial_parameters_and_only_them(tmp_path: Path) -> None:
    """The top-level seed is the parameters' (the data order is the data source's own seed)."""
    from engine.training.build import build_setup
    from engine.training.loop import place_initial_state, programs_for

    runs = [plan_one(tmp_path, f"seed={seed}") for seed in (0, 1)]
    setups = [build_setup(run) for run in runs]
    states = [place_initial_state(setup, programs_for(setup), setup.schedules) for setup in setups]
    params = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)]) for state in states]
    assert not np.allclose(params[0], params[1])
    assert same_data(first_batches(runs[0]), first_batches(runs[1]))


# --- data: the user's text files --------------------------------------------------------------------

TEXT = TOKENS.replace("vocab_size: 96", "vocab_size: 259").replace(
    "source: {kind: synthetic_tokens, eval_examples: 32, eval_batch_size: 16}",
    "source: {kind: text_files, paths: [docs.jsonl], format: jsonl, tokenizer: {kind: bytes}, eval_batch_size: 4}")


@pytest.fixture
def text_corpus(tmp_path: Path) -> Path:
    """Documents whose `text` and `body` fields differ, as JSON lines and as one plain file."""
    rng = np.random.default_rng(0)
    words = ["sparse", "dense", "scaling", "law", "tokens", "masks", "pruning", "weights"]
    lines = [json.dumps({"text": " ".join(rng.choice(words, 40)), "body": " ".join(rng.choice(words, 40)).upper()})
             for _ in range(200)]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.parametrize("field, value", [
    ("seed", "1"),
    ("paths", "[docs.txt]"),
    ("format", "text"),
    ("text_field", "body"),
    ("eval_fraction", "0.5"),
    ("eval_batch_size", "8"),
    ("max_eval_examples", "4"),
])
def test_text_files_field_changes_the_data(text_corpus: Path, field: str, value: str) -> None:
    shutil.copy(text_corpus / "docs.jsonl", text_corpus / "docs.txt")  # as plain text: one document
    overrides = [f"data.source.{field}={value}"]
    if field == "paths":
        overrides.append("data.source.format=text")
    before = first_batches(plan_one(text_corpus, text=TEXT))
    after = first_batches(plan_one(text_corpus, *overrides, text=TEXT))
    assert not same_data(before, after)


# --- model and sparsity: what the run's plan and built model are -------------------------------------

T5 = """\
name: t5
model:
  kind: t5
  base: {layers: 1, decoder_layers: 1, num_heads: 2, mlp_ratio: 2.0, vocab_size: 300, seq_len: 32, target_len: 16,
         relative_buckets: 8}
  d_model: 8
sparsity: {level: 0.5, schedule: {kind: gmp, start: 0.25, end: 0.75, interval: 2}}
optimizer:
  kind: adamw
  learning_rate: {kind: constant, value: 1.0e-3}
data:
  source: {kind: synthetic_tokens, eval_examples: 32, eval_batch_size: 16}
  steps: 16
  batch_size: 4
  eval_every: 8
analysis: {fit: null}
"""

SIZED = ("model.d_model=null", "model.nonzeros=2000")


@pytest.mark.parametrize("text, overrides, changed", [
    (VIT, ("model.d_model=12",), "dims"),
    (VIT, (*SIZED, "model.nonzeros=4000"), "dims"),
    (VIT, (*SIZED, "model.width_multiple=16"), "dims"),
    (VIT, ("model.base.layers=2",), "dims"),
    (VIT, ("model.base.num_heads=4",), "dims"),
    (VIT, ("model.base.mlp_ratio=4.0",), "dims"),
    (VIT, ("model.base.image_size=16",), "dims"),
    (VIT, ("model.base.patch_size=2",), "dims"),
    (VIT, ("model.base.channels=1",), "dims"),
    (VIT, ("model.base.num_classes=8",), "dims"),
    (T5, ("model.base.layers=2",), "dims"),
    (T5, ("model.base.decoder_layers=2",), "dims"),
    (T5, ("model.base.num_heads=4",), "dims"),
    (T5, ("model.base.mlp_ratio=4.0",), "dims"),
    (T5, ("model.base.vocab_size=320",), "dims"),
    (T5, ("model.base.seq_len=64",), "batch"),  # input and target lengths: no parameter changes
    (T5, ("model.base.target_len=24",), "batch"),
    (T5, ("model.base.relative_buckets=16",), "dims"),
    (TOKENS, ("model.base.layers=2",), "dims"),
    (TOKENS, ("model.base.num_heads=4",), "dims"),
    (TOKENS, ("model.base.mlp_ratio=4.0",), "dims"),
    (TOKENS, ("model.base.vocab_size=128",), "dims"),
    (TOKENS, ("model.base.seq_len=32",), "dims"),
    (VIT, ("sparsity.level=0.75",), "nonzeros"),
    (VIT, ("data.steps=32",), "data"),
    (VIT, ("data.batch_size=16",), "data"),
    (VIT, ("data.steps=null", "data.flops=1.0e8"), "data"),
    (VIT, ("name=other",), "run_dir"),
    (VIT, ("run.output_dir=elsewhere",), "run_dir"),
])
def test_model_size_and_budget_fields_change_the_plan(tmp_path: Path, text: str, overrides: tuple[str, ...],
                                                      changed: str) -> None:
    base = tuple(o for o in overrides if o in SIZED)
    before = plan_one(tmp_path, *base, text=text)
    after = plan_one(tmp_path, *overrides, text=text)
    if changed == "batch":
        assert before.dims != after.dims and not same_data(first_batches(before), first_batches(after))
        return
    assert getattr(before, changed) != getattr(after, changed)
    if changed == "dims":  # a model of another shape: other parameter shapes
        from engine.planning.sizing import param_shapes

        assert param_shapes(before.dims) != param_shapes(after.dims) or before.dims.num_heads != after.dims.num_heads


def test_model_kind_chooses_the_family(tmp_path: Path) -> None:
    families = {plan_one(tmp_path / kind, text=text).dims.family for kind, text in
                (("vit", VIT), ("t5", T5), ("decoder", TOKENS))}
    assert families == {"vit", "t5", "decoder"}


def sparsity_per_step(run: RunPlan) -> list[float]:
    """The level the built pruning schedule sets the masks to after each step."""
    from engine.training.build import build_setup

    schedule = build_setup(run).schedules.sparsity
    return [round(float(schedule.sparsity_at(jnp.asarray(step))), 6) for step in range(run.steps)]


@pytest.mark.parametrize("overrides", [
    ("sparsity.schedule.start=0.0",),
    ("sparsity.schedule.end=0.5",),
    ("sparsity.schedule.interval=4",),
    ("sparsity.schedule={kind: oneshot, at: 0.5}",),
    ("sparsity.schedule={kind: oneshot, at: 0.25}",),
    ("sparsity.schedule={kind: dense}", "sparsity.level=0.0"),
])
def test_sparsity_schedule_fields_change_when_the_masks_prune(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    before = sparsity_per_step(plan_one(tmp_path, "sparsity.schedule={kind: oneshot, at: 0.5}"
                                        if "at: 0.25" in overrides[0] else "sparsity.level=0.5"))
    after = sparsity_per_step(plan_one(tmp_path, *overrides))
    assert before != after


def test_sparsity_pattern_and_targets_change_what_is_pruned(tmp_path: Path) -> None:
    """The pattern is the built optimizer's (n:m groups instead of any weight); t5's targets add the
    embedding and the LM head to the sparsified tensors."""
    from engine.sparsity import NM
    from engine.training.build import build_setup

    unstructured = build_setup(plan_one(tmp_path, "model.d_model=16")).optimizer
    nm = build_setup(plan_one(tmp_path, "model.d_model=16", "sparsity.pattern={kind: nm, n: 2, m: 4}")).optimizer
    nm8 = build_setup(plan_one(tmp_path, "model.d_model=16", "sparsity.pattern={kind: nm, n: 4, m: 8}")).optimizer
    assert not isinstance(unstructured.pattern, NM)
    assert (nm.pattern.n, nm.pattern.m, nm8.pattern.n, nm8.pattern.m) == (2, 4, 4, 8)
    backbone = build_setup(plan_one(tmp_path, text=T5)).optimizer.sparsified
    embeddings = build_setup(plan_one(tmp_path, "sparsity.targets=backbone_and_embeddings", text=T5)).optimizer.sparsified
    assert sum(embeddings) == sum(backbone) + 2  # the token embedding and the LM head


# --- run policy and parallelism ---------------------------------------------------------------------


def test_checkpoint_every_keep_and_eval_every_shape_a_training_run(tmp_path: Path) -> None:
    """16 steps: checkpoints every 4 keeping 2 leave steps 12 and 16; keep 3 leaves 8, 12, 16;
    every 8 leaves 8 and 16; validation every 8 runs at 8 and 16, every 4 at 4, 8, 12, 16."""
    from engine.training.build import build_setup
    from engine.training.loop import train_run

    def trained(*overrides: str) -> tuple[list[int], list[int]]:
        out = f"run.output_dir={tmp_path / '-'.join(overrides)}"  # one run id for all: the run policy is not in it
        run = plan_one(tmp_path, "run.checkpoint_every=4", "run.keep=2", "run.tensorboard=false", out, *overrides)
        train_run(build_setup(run), run.run_dir)
        kept = sorted(int(p.name) for p in (run.run_dir / "checkpoints").iterdir() if p.name.isdigit())
        records = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
        return kept, [r["step"] for r in records if "eval_loss" in r]

    assert trained() == ([12, 16], [8, 16])
    assert trained("run.keep=3") == ([8, 12, 16], [8, 16])
    assert trained("run.checkpoint_every=8") == ([8, 16], [8, 16])
    assert trained("data.eval_every=4") == ([12, 16], [4, 8, 12, 16])


def test_checkpoint_min_seconds_skips_periodic_saves_within_its_interval(tmp_path: Path) -> None:
    """A save checkpoint_every calls for happens only once checkpoint_min_seconds have passed
    since the run's last save or start; the final save always happens."""
    from engine.training.build import build_setup
    from engine.training.loop import save_due, train_run

    def kept(*overrides: str) -> list[int]:
        out = f"run.output_dir={tmp_path / '-'.join(overrides)}"
        run = plan_one(tmp_path, "run.checkpoint_every=4", "run.keep=5", "run.tensorboard=false", out, *overrides)
        train_run(build_setup(run), run.run_dir)
        return sorted(int(p.name) for p in (run.run_dir / "checkpoints").iterdir() if p.name.isdigit())

    assert kept() == [4, 8, 12, 16]
    assert kept("run.checkpoint_min_seconds=1e-9") == [4, 8, 12, 16]
    assert kept("run.checkpoint_min_seconds=1e6") == [16]  # the final save only
    setup = build_setup(plan_one(tmp_path, "run.checkpoint_every=4", "run.checkpoint_min_seconds=30"))
    now = time.perf_counter()
    assert [save_due(setup, 8, now - since) for since in (29.9, 30.0, 400.0)] == [False, True, True]
    assert not save_due(setup, 7, now - 400.0)  # only at checkpoint_every's steps


def test_wandb_project_entity_and_mode_reach_the_wandb_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the spec says is what W&B is started with (the logged history itself:
    test_run_logging.py::test_wandb_offline_run_holds_the_logged_history)."""
    import importlib.machinery
    import sys
    import types

    from engine.training.build import build_logging
    from engine.training.run_log import WandbLog

    started: list[dict[str, Any]] = []
    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.Settings = lambda **settings: settings  # type: ignore[attr-defined]
    fake.init = lambda **options: started.append(options) or types.SimpleNamespace(step=0)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    for wandb in ("{project: one}", "{project: two, entity: lab, mode: offline}"):
        logging = build_logging(plan_one(tmp_path, f"run.wandb={wandb}"))
        assert logging.wandb is not None
        WandbLog(logging.wandb, tmp_path)
    assert [(s["project"], s["entity"], s["mode"]) for s in started] == [("one", None, "online"),
                                                                         ("two", "lab", "offline")]


def test_sharding_rules_split_the_matching_parameters(tmp_path: Path) -> None:
    """On one device too, a rule decides each matching parameter's partition spec (the first
    matching rule wins; unmatched parameters are replicated)."""
    from jax.sharding import PartitionSpec

    from engine.models import abstract_params
    from engine.training.build import build_setup
    from engine.training.parallel import param_specs

    def specs(*overrides: str) -> dict[str, PartitionSpec]:
        run = plan_one(tmp_path, *overrides)
        layout = build_setup(run).layout
        return {path: spec for path, (_, spec) in param_specs(abstract_params(run.dims), layout, "test").items()}

    plain = specs()
    fc1 = specs("parallelism.rules=[{pattern: '.*/fc1/kernel', spec: [fsdp, null]}]")
    first_wins = specs("parallelism.rules=[{pattern: '.*/fc1/kernel', spec: [null, fsdp]}, {pattern: '.*', spec: [fsdp]}]")
    assert set(plain.values()) == {PartitionSpec()}
    changed = {path for path in plain if fc1[path] != plain[path]}
    assert changed and all(path.endswith("fc1/kernel") for path in changed)
    assert {first_wins[path] for path in changed} == {PartitionSpec(None, "fsdp")}


def test_worker_resources_are_what_ray_and_slurm_are_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from engine.study import executors
    from engine.study.executors.slurm_executor import job_parameters
    from engine.study.sweep import SweepSummary

    spec = write(tmp_path, VIT)
    worker = "parallelism.worker={cpus: 3, gpus: 1, timeout_min: 7}"
    runs = plan_experiment(spec, [f"run.output_dir={tmp_path / 'runs'}", worker])
    slurm = job_parameters([run.spec.parallelism.worker for run in runs], len(runs), "effect")
    assert (slurm["cpus_per_task"], slurm["gpus_per_node"], slurm["timeout_min"]) == (3, 1, 7)
    asked: list[dict[str, Any]] = []

    class Task:
        def options(self, **options: Any) -> Task:
            asked.append(options)
            return self

        def remote(self, job: Any) -> str:
            return job.run_id

    fake = types.SimpleNamespace(init=lambda **_: None, shutdown=lambda: None, cluster_resources=lambda: {"CPU": 2},
                                 remote=lambda **_: lambda function: Task(), wait=lambda refs, num_returns: (refs[:1], []),
                                 get=lambda ref: SweepSummary())
    monkeypatch.setattr(executors, "require", lambda module, extra: fake)
    executors.execute("ray", runs, spec, [worker], Console(file=StringIO()), {})
    assert [(a["num_cpus"], a["num_gpus"]) for a in asked] == [(3, 1)]


# --- analysis: the fit and what is derived from it -------------------------------------------------


def fitted(tmp_path: Path, *overrides: str, noise: float = 0.02, only: Any = None) -> tuple[Any, Any]:
    """The sweep's fit (engine.study.analysis.fit_sweep, as `engine run` makes it) of results that
    follow the paper's law up to a fixed multiplicative noise, and its findings."""
    from engine.fit.findings import derive_findings
    from engine.fit.io import read_table
    from engine.study.analysis import fit_sweep

    runs, sweep_dir = sweep_with_results(tmp_path, *overrides, only=only)
    rows = [json.loads(line) for line in (sweep_dir / "results.jsonl").read_text().splitlines()]
    factors = np.exp(noise * np.random.default_rng(0).standard_normal(len(rows)))
    (sweep_dir / "results.jsonl").unlink()
    (sweep_dir / "results.csv").unlink()
    for row, factor in zip(rows, factors, strict=True):
        append_result(sweep_dir, row | {"loss": row["loss"] * factor})
    fit, _ = fit_sweep(runs, sweep_dir)
    return fit, derive_findings(fit, read_table(sweep_dir / "results.csv"))


def fit_summary(fit: Any) -> tuple[Any, ...]:
    samples = None if fit.bootstrap_samples is None else np.round(np.asarray(fit.bootstrap_samples), 6).tobytes()
    return (round(fit.objective, 12), fit.diagnostics.total_starts, samples,
            None if fit.holdout is None else fit.holdout.expression)


@pytest.mark.parametrize("overrides", [
    ("analysis.fit.huber_delta=0.1",),
    ("analysis.fit.log_loss=false",),
    ("analysis.fit.starts=2",),
    ("analysis.fit.bootstrap=3",),
    ("analysis.fit.bootstrap=3", "analysis.fit.seed=1"),
    ("analysis.fit.holdout={kind: largest_nonzeros}",),
])
def test_fit_settings_change_the_fit(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    base = ("analysis.fit.bootstrap=3",) if "analysis.fit.seed=1" in overrides else ()
    before, _ = fitted(tmp_path / "before", *base)
    after, _ = fitted(tmp_path / "after", *overrides)
    assert fit_summary(before) != fit_summary(after)


POINT = {"sparsity": 0.5, "nonzeros": 1.0e6, "data": 1.0e8}


@pytest.mark.parametrize("field, value", [("sparsity", 0.75), ("nonzeros", 1.0e7), ("data", 1.0e9)])
def test_extrapolation_points_are_where_the_law_is_predicted(tmp_path: Path, field: str, value: float) -> None:
    def predicted(point: dict[str, float], where: Path) -> float:
        _, findings = fitted(where, f"analysis.extrapolation=[{json.dumps(point)}]", noise=0.0)
        [(at, estimate)] = findings.predictions
        assert at == (point["sparsity"], point["nonzeros"], point["data"])
        return estimate.value

    assert predicted(POINT, tmp_path / "a") != pytest.approx(predicted(POINT | {field: value}, tmp_path / "b"))


ISOFLOP_SWEEP = ("sweep={grid: {model.d_model: [8, 12, 16, 20], sparsity.level: [0.0, 0.5], data.flops: [2.0e8, 8.0e8]}}",
                 "data.steps=null")


def isoflop_budgets(tmp_path: Path, *overrides: str) -> int:
    _, findings = fitted(tmp_path, *ISOFLOP_SWEEP, *overrides, noise=0.0)
    return len(findings.isoflop.optima)


def test_isoflop_tolerance_and_min_sizes_decide_the_budgets_analysed(tmp_path: Path) -> None:
    """4 sizes share each budget up to the steps' rounding: 2 budgets x 2 sparsities have a
    parabola at the default tolerance; none when the tolerance is below the rounding or when each
    budget needs more sizes than the sweep has."""
    assert isoflop_budgets(tmp_path / "a", "analysis.isoflop={}") == 4
    assert isoflop_budgets(tmp_path / "b", "analysis.isoflop={budget_tolerance: 1.0e-9}") == 0
    assert isoflop_budgets(tmp_path / "c", "analysis.isoflop={min_sizes: 5}") == 0


def test_design_budget_and_stop_sd_decide_whether_another_round_is_trained(tmp_path: Path) -> None:
    """The budget (a multiple of the initial runs' FLOPs, as engine run computes it) and stop_sd
    end the rounds (the whole loop with training: test_adaptive.py)."""
    from engine.fit.io import read_table
    from engine.study import adaptive

    initial = {"model.d_model": [8, 16], "sparsity.level": [0.0, 0.875], "data.steps": [16, 32]}

    def next_round(**design: Any) -> Any:
        text = json.dumps({"target": "b_N", "initial": initial, "batch": 2} | design)
        where = tmp_path / "-".join(f"{k}{v}" for k, v in design.items())
        trained = lambda runs: adaptive.initial_runs(runs, runs[0].spec.analysis.design)  # noqa: E731
        fit, _ = fitted(where, "analysis.fit.bootstrap=12", f"analysis.design={text}", only=trained)
        runs = plan_experiment(where / "effect.yaml", [f"run.output_dir={where / 'runs'}", f"analysis.design={text}"])
        spec_design = runs[0].spec.analysis.design
        budget = spec_design.budget * sum(run.flops_dense for run in trained(runs))
        table = read_table(runs[0].run_dir.parent / "results.csv")
        return adaptive.next_round(fit, table, runs, spec_design, [], budget, 6.0, Console(file=StringIO()))

    assert next_round(budget=10.0) is not None
    assert next_round(budget=1.0e-6) is None  # nothing fits the budget
    assert next_round(budget=10.0, stop_sd=1.0e9) is None  # the target is already pinned down enough


def test_fit_sources_name_the_law_an_nm_refit_freezes_and_table4_uses(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """nm_refit.dense_fit and pretrained_vs_scratch.law read a fit file, or the fit another spec's
    `engine run` wrote; the refit's frozen coefficients and Table 4's law are that one."""
    from engine.planning.dependencies import fit_file

    monkeypatch.chdir(tmp_path)  # another spec's fit is found relative to the working directory
    laws = {"a": paper.T5_C4, "b": LawCoefficients(**{**paper.T5_C4.as_dict(), "b_N": paper.T5_C4.b_N * 1.1})}
    for name, law in laws.items():
        write(tmp_path, json.dumps({"coefficients": law.as_dict()}), f"{name}.json")
    dense_spec = write(tmp_path, SWEEP.replace("name: effect", "name: dense"), "dense.yaml")
    dense_fit = fit_file(plan_experiment(dense_spec))  # relative to the working directory, as engine run has it
    dense_fit.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "b.json", dense_fit)

    def frozen_b_n(source: str, where: str) -> float:
        runs, sweep_dir = sweep_with_results(tmp_path / where, "analysis.fit={starts: 2, bootstrap: 0, holdout: {kind: none}}",
                                             f"analysis.nm_refit={{dense_fit: {source}}}")
        rows = [json.loads(line) for line in (sweep_dir / "results.jsonl").read_text().splitlines()]
        (sweep_dir / "results.jsonl").unlink()
        (sweep_dir / "results.csv").unlink()
        for row in rows:  # the sparse runs become 2:4 (S = 0.5) and 1:8 (S = 0.875) runs
            append_result(sweep_dir, row | {"pattern": {0.5: "2:4", 0.875: "1:8"}.get(row["sparsity"], "")})
        report = analyse(runs, sweep_dir, Console(file=StringIO()))
        assert report is not None
        return json.loads((report / "fit_n4.json").read_text())["coefficients"]["b_N"]

    assert frozen_b_n("{kind: fit_file, path: ../a.json}", "a") == pytest.approx(laws["a"].b_N)
    assert frozen_b_n("{kind: fit_file, path: ../b.json}", "b") == pytest.approx(laws["b"].b_N)
    assert frozen_b_n("{kind: spec, spec: ../dense.yaml}", "spec") == pytest.approx(laws["b"].b_N)
    table4 = "analysis.pretrained_vs_scratch={law: {kind: spec, spec: ../dense.yaml}}"
    _, report = analysed(tmp_path / "table4", "analysis.fit=null", table4, pretrained=2)
    assert TABLE4 in report and dense_fit.as_posix() in report


def test_data_source_kind_chooses_the_source(text_corpus: Path) -> None:
    synthetic = first_batches(plan_one(text_corpus, "model.base.vocab_size=259", text=TOKENS))
    files = first_batches(plan_one(text_corpus, text=TEXT))
    assert not same_data(synthetic, files)


# --- data: the user's images --------------------------------------------------------------------------


@pytest.fixture
def image_files(tmp_path: Path) -> Path:
    """The same 64 labelled 8x8 images as one .npz, as a .npy pair and as Parquet records of PNG
    bytes (with a second image and label column holding other images)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    def png(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 64, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, size=(2, 64))
    np.savez(tmp_path / "images.npz", images=images[0], labels=labels[0])
    np.save(tmp_path / "images.npy", images[1])
    np.save(tmp_path / "labels.npy", labels[1])
    columns = {"image": [png(i) for i in images[0]], "label": labels[0].tolist(),
               "other_image": [png(i) for i in images[1]], "other_label": labels[1].tolist()}
    pq.write_table(pa.table(columns), tmp_path / "images.parquet")
    shutil.copy(tmp_path / "images.parquet", tmp_path / "copy.parquet")
    return tmp_path


ARRAYS = VIT.replace("source: {kind: synthetic_images, seed: 0, eval_examples: 32, eval_batch_size: 16}",
                     "source: {kind: image_arrays, paths: [images.npz], eval_batch_size: 4}")
RECORDS = VIT.replace("source: {kind: synthetic_images, seed: 0, eval_examples: 32, eval_batch_size: 16}",
                      "source: {kind: image_records, paths: [images.parquet], eval_batch_size: 4}")


@pytest.mark.parametrize("text, field, value", [
    (ARRAYS, "seed", "1"),
    (ARRAYS, "paths", "[images.npy, labels.npy]"),
    (ARRAYS, "eval_fraction", "0.5"),
    (ARRAYS, "eval_batch_size", "2"),
    (RECORDS, "seed", "1"),
    (RECORDS, "paths", "[images.parquet, copy.parquet]"),
    (RECORDS, "image_field", "other_image"),
    (RECORDS, "label_field", "other_label"),
    (RECORDS, "eval_fraction", "0.5"),
    (RECORDS, "eval_batch_size", "2"),
    (RECORDS, "max_eval_examples", "8"),  # of the 32 eval_fraction 0.5 holds out
])
def test_image_file_field_changes_the_data(image_files: Path, text: str, field: str, value: str) -> None:
    base = ["data.steps=4", "sparsity.schedule.interval=1"]  # fewer examples than the files hold
    if field == "max_eval_examples":
        base.append("data.source.eval_fraction=0.5")
    before = first_batches(plan_one(image_files, *base, text=text))
    after = first_batches(plan_one(image_files, *base, f"data.source.{field}={value}", text=text))
    assert not same_data(before, after)


@pytest.mark.parametrize("field, value", [("vocab_size", "400"), ("model_type", "bpe"), ("sample_bytes", "20000")])
def test_sentencepiece_training_fields_change_the_tokens(tmp_path: Path, field: str, value: str) -> None:
    """A SentencePiece model trained from the spec's own files: each training setting gives another
    model, so other token ids (the tokenizer kinds themselves:
    test_data_runs.py::test_sentencepiece_trained_from_the_spec_and_a_user_model_drive_runs)."""
    from corpus import copy_stdlib_corpus

    assert copy_stdlib_corpus(tmp_path / "text")
    text = TEXT.replace("vocab_size: 259", "vocab_size: 512").replace(
        "paths: [docs.jsonl], format: jsonl, tokenizer: {kind: bytes}",
        "paths: [text], tokenizer: {kind: sentencepiece, train: {vocab_size: 300, sample_bytes: 200000}}")
    before = first_batches(plan_one(tmp_path, text=text))
    after = first_batches(plan_one(tmp_path, f"data.source.tokenizer.train.{field}={value}", text=text))
    assert not same_data(before, after)


# --- every field of the schema has its effect test ----------------------------------------------------

HERE = "test_spec_fields_effect.py"
PLAN = f"{HERE}::test_model_size_and_budget_fields_change_the_plan"
LEARNING_RATE = f"{HERE}::test_learning_rate_field_changes_the_schedule_at_the_step_it_governs"
OPTIMIZER = f"{HERE}::test_optimizer_field_changes_the_update"
SYNTHETIC = f"{HERE}::test_synthetic_source_field_changes_the_data"
TEXT_FILES = f"{HERE}::test_text_files_field_changes_the_data"
IMAGE_FILES = f"{HERE}::test_image_file_field_changes_the_data"
SCHEDULE = f"{HERE}::test_sparsity_schedule_fields_change_when_the_masks_prune"
PATTERN = f"{HERE}::test_sparsity_pattern_and_targets_change_what_is_pruned"
FIT = f"{HERE}::test_fit_settings_change_the_fit"
DERIVED = f"{HERE}::test_optimal_sparsity_rows_are_its_own_sparsities_even_without_gains"
EXTRAPOLATION = f"{HERE}::test_extrapolation_points_are_where_the_law_is_predicted"
ISOFLOP = f"{HERE}::test_isoflop_tolerance_and_min_sizes_decide_the_budgets_analysed"
FIT_SOURCES = f"{HERE}::test_fit_sources_name_the_law_an_nm_refit_freezes_and_table4_uses"
TABLE4_TEST = f"{HERE}::test_pretrained_vs_scratch_adds_table4_through_its_law_and_keeps_the_sweeps_own_fit"
POLICY = f"{HERE}::test_checkpoint_every_keep_and_eval_every_shape_a_training_run"
WANDB = f"{HERE}::test_wandb_project_entity_and_mode_reach_the_wandb_run"
WORKER = f"{HERE}::test_worker_resources_are_what_ray_and_slurm_are_asked_for"
RULES = f"{HERE}::test_sharding_rules_split_the_matching_parameters"
BUDGET_FRACTION = f"{HERE}::test_budget_fraction_is_a_share_of_the_source_data_not_of_its_steps"
CHECKPOINT_SOURCE = f"{HERE}::test_a_checkpoint_source_step_is_loaded_and_budgets_by_steps"
SENTENCEPIECE = f"{HERE}::test_sentencepiece_training_fields_change_the_tokens"
ADAPTIVE = "test_adaptive.py::test_an_adaptive_study_trains_the_initial_runs_then_one_suggested_round"

# Field path (as `--set` writes it; `(kind)` marks a field of one union variant, `[]` a list's items)
# -> the test that shows what changing it does. Sections that are plain mappings (e.g. `model`,
# `data.source`, `parallelism.worker`) are covered by their fields and not listed.
COVERAGE: dict[str, str] = {
    "name": PLAN,
    "extends": "test_spec_loading.py::test_extends_merges_child_over_base",
    "seed": f"{HERE}::test_seed_draws_other_initial_parameters_and_only_them",
    "model.kind": f"{HERE}::test_model_kind_chooses_the_family",
    "model.nonzeros": PLAN,
    "model.d_model": PLAN,
    "model.width_multiple": PLAN,
    "model(vit).preset": "test_plan.py::test_run_id_is_the_same_for_a_preset_and_its_values_spelt_out",
    "model(t5).preset": "test_plan.py::test_t5_base_backbone_count_by_hand",
    **{f"model(vit).base.{f}": PLAN for f in ("layers", "num_heads", "mlp_ratio", "image_size", "patch_size",
                                              "channels", "num_classes")},
    **{f"model(t5).base.{f}": PLAN for f in ("layers", "decoder_layers", "num_heads", "mlp_ratio", "vocab_size",
                                             "seq_len", "target_len", "relative_buckets")},
    **{f"model(decoder).base.{f}": PLAN for f in ("layers", "num_heads", "mlp_ratio", "vocab_size", "seq_len")},
    "sparsity.level": PLAN,
    "sparsity.pattern.kind": PATTERN,
    "sparsity.pattern(nm).n": PATTERN,
    "sparsity.pattern(nm).m": PATTERN,
    "sparsity.targets": PATTERN,
    "sparsity.schedule.kind": SCHEDULE,
    "sparsity.schedule(gmp).start": SCHEDULE,
    "sparsity.schedule(gmp).end": SCHEDULE,
    "sparsity.schedule(gmp).interval": SCHEDULE,
    "sparsity.schedule(oneshot).at": SCHEDULE,
    "init.kind": "test_pretrained.py::test_params_only_restore_fresh_optimizer_masks_from_restored_weights",
    "init(pretrained).source.kind": CHECKPOINT_SOURCE,
    "init(pretrained).source(run).spec": BUDGET_FRACTION,
    "init(pretrained).source(run).where": "test_pretrained.py::test_a_source_of_another_width_is_refused_at_plan_time",
    "init(pretrained).source(checkpoint).path": "test_pretrained.py::test_shape_mismatch_names_the_tensor_and_writes_nothing",
    "init(pretrained).source(checkpoint).step": CHECKPOINT_SOURCE,
    "init(pretrained).budget_fraction": BUDGET_FRACTION,
    "optimizer.kind": f"{HERE}::test_optimizer_kind_chooses_the_optimizer",
    "optimizer.learning_rate.kind": f"{HERE}::test_learning_rate_kind_chooses_the_schedule",
    "optimizer.learning_rate(constant).value": LEARNING_RATE,
    **{f"optimizer.learning_rate({kind}).{f}": LEARNING_RATE for kind, fields in (
        ("rsqrt", ("peak", "warmup_steps", "linear_warmup")),
        ("cosine", ("peak", "warmup_steps", "final_fraction")),
        ("warmup_constant_cooldown", ("peak", "warmup_steps", "cooldown_fraction"))) for f in fields},
    **{f"optimizer(adafactor).{f}": OPTIMIZER for f in ("relative_step", "sparsity_aware_rms", "clip_threshold",
                                                        "decay_rate", "beta2_cap", "momentum", "eps", "min_param_scale")},
    **{f"optimizer(adamw).{f}": OPTIMIZER for f in ("b1", "b2", "eps")},
    "optimizer.weight_decay": OPTIMIZER,
    "optimizer.grad_clip_norm": OPTIMIZER,
    "data.source.kind": f"{HERE}::test_data_source_kind_chooses_the_source",
    **{f"data.source(synthetic_images).{f}": SYNTHETIC for f in (
        "seed", "teacher_width", "teacher_layers", "teacher_frequency", "feature_decay", "label_temperature",
        "patterns", "active_patterns", "pixel_noise", "smoothness", "eval_examples", "eval_batch_size")},
    **{f"data.source(synthetic_tokens).{f}": SYNTHETIC for f in (
        "seed", "symbols", "order", "concentration", "backoff", "smoothing", "zipf_exponent", "eval_examples",
        "eval_batch_size")},
    **{f"data.source(text_files).{f}": TEXT_FILES for f in (
        "seed", "paths", "format", "text_field", "eval_fraction", "eval_batch_size", "max_eval_examples")},
    "data.source(text_files).tokenizer.kind":
        "test_data_runs.py::test_sentencepiece_trained_from_the_spec_and_a_user_model_drive_runs",
    "data.source(text_files).tokenizer(sentencepiece).model":
        "test_data_runs.py::test_sentencepiece_trained_from_the_spec_and_a_user_model_drive_runs",
    "data.source(text_files).tokenizer(sentencepiece).train": SENTENCEPIECE,
    **{f"data.source(text_files).tokenizer(sentencepiece).train.{f}": SENTENCEPIECE
       for f in ("vocab_size", "model_type", "sample_bytes")},
    "data.source(text_files).tokenizer(huggingface).file": "test_data_cache.py::test_huggingface_tokenizer_json",
    **{f"data.source(image_arrays).{f}": IMAGE_FILES for f in ("seed", "paths", "eval_fraction", "eval_batch_size")},
    **{f"data.source(image_records).{f}": IMAGE_FILES for f in (
        "seed", "paths", "image_field", "label_field", "eval_fraction", "eval_batch_size", "max_eval_examples")},
    "data.steps": PLAN,
    "data.flops": PLAN,
    "data.batch_size": PLAN,
    "data.eval_every": POLICY,
    "data.on_exhausted": "test_data_files.py::test_exhaustion_warn_wraps_with_fresh_permutations",
    "sweep.grid": "test_spec_loading.py::test_extends_sweep_expansion",
    "sweep.zip": "test_spec_loading.py::test_extends_sweep_expansion",
    "analysis.fit": TABLE4_TEST,
    **{f"analysis.fit.{f}": FIT for f in ("huber_delta", "log_loss", "starts", "seed", "bootstrap", "holdout.kind")},
    "analysis.fit.holdout(runs).coordinates":
        "test_analysis_declared.py::test_runs_holdout_holds_out_the_listed_coordinates_and_reports_their_error",
    "analysis.gains": DERIVED,
    "analysis.gains.sparsities": DERIVED,
    "analysis.optimal_sparsity": DERIVED,
    "analysis.optimal_sparsity.costs": DERIVED,
    "analysis.optimal_sparsity.sparsities": DERIVED,
    "analysis.extrapolation": EXTRAPOLATION,
    **{f"analysis.extrapolation[].{f}": EXTRAPOLATION for f in ("sparsity", "nonzeros", "data")},
    "analysis.isoflop": ISOFLOP,
    "analysis.isoflop.budget_tolerance": ISOFLOP,
    "analysis.isoflop.min_sizes": ISOFLOP,
    "analysis.design": ADAPTIVE,
    "analysis.design.target": ADAPTIVE,
    "analysis.design.initial": ADAPTIVE,
    "analysis.design.rounds": ADAPTIVE,
    "analysis.design.batch": ADAPTIVE,
    "analysis.design.budget": f"{HERE}::test_design_budget_and_stop_sd_decide_whether_another_round_is_trained",
    "analysis.design.stop_sd": f"{HERE}::test_design_budget_and_stop_sd_decide_whether_another_round_is_trained",
    "analysis.nm_refit": FIT_SOURCES,
    "analysis.nm_refit.dense_fit.kind": FIT_SOURCES,
    "analysis.nm_refit.dense_fit(spec).spec": FIT_SOURCES,
    "analysis.nm_refit.dense_fit(fit_file).path": FIT_SOURCES,
    "analysis.pretrained_vs_scratch": TABLE4_TEST,
    "analysis.pretrained_vs_scratch.law.kind": FIT_SOURCES,
    "analysis.pretrained_vs_scratch.law(spec).spec": FIT_SOURCES,
    "analysis.pretrained_vs_scratch.law(fit_file).path": TABLE4_TEST,
    "analysis.report.formats": "test_analysis_declared.py::test_report_formats_writes_exactly_the_declared_formats",
    "run.checkpoint_every": POLICY,
    "run.keep": POLICY,
    "run.checkpoint_min_seconds": f"{HERE}::test_checkpoint_min_seconds_skips_periodic_saves_within_its_interval",
    "run.pack_size": "test_packs.py::test_the_four_runs_form_one_pack_and_pack_size_bounds_it",
    "run.failure_policy": f"{HERE}::test_fail_fast_is_refused_by_the_executors_that_start_every_run_at_once",
    "run.output_dir": PLAN,
    "run.tensorboard": "test_run_logging.py::test_tensorboard_false_writes_no_event_files",
    "run.wandb": "test_run_logging.py::test_wandb_offline_run_holds_the_logged_history",
    "run.wandb.project": WANDB,
    "run.wandb.entity": WANDB,
    "run.wandb.mode": WANDB,
    "parallelism.mesh.data": "test_parallel.py::test_engine_run_refuses_a_mesh_this_machine_lacks_before_claiming_runs",
    "parallelism.mesh.fsdp": "test_parallel.py::test_8_devices_with_fsdp_give_the_same_losses",
    "parallelism.rules": RULES,
    "parallelism.rules[].pattern": RULES,
    "parallelism.rules[].spec": RULES,
    "parallelism.worker.cpus": WORKER,
    "parallelism.worker.gpus": WORKER,
    "parallelism.worker.timeout_min": WORKER,
}


def schema_fields(schema: dict[str, Any]) -> list[str]:
    """Every field of the experiment schema by its path. A union's variants share a path where
    they share the field; a field of one variant is written `path(kind).field`, each union's
    `kind` once. A mapping that is neither nullable nor a list is covered by its own fields."""
    definitions = schema["$defs"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = definitions[node["$ref"].rsplit("/", 1)[-1]]
        return node

    def options(node: dict[str, Any]) -> list[dict[str, Any]]:
        node = resolve(node)
        alternatives = node.get("oneOf") or node.get("anyOf")
        return [o for a in alternatives for o in options(a)] if alternatives else [node]

    def objects(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [o for o in options(node) if "properties" in o]

    def items(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [i for o in options(node) if o.get("type") == "array" and "items" in o for i in objects(o["items"])]

    found: list[str] = []

    def walk(variants: list[dict[str, Any]], prefix: str) -> None:
        union = len(variants) > 1
        for variant in variants:
            kind = variant["properties"].get("kind", {}).get("const")
            for name, node in variant["properties"].items():
                shared = all(json.dumps(other["properties"].get(name), sort_keys=True) == json.dumps(node, sort_keys=True)
                             for other in variants)
                if name == "kind" and union:
                    path = f"{prefix}kind"
                else:
                    path = f"{prefix}{name}" if shared or not union else f"{prefix[:-1]}({kind}).{name}"
                nested, listed = objects(node), items(node)
                nullable = any(o.get("type") == "null" for o in options(node))
                if (not nested or nullable or listed) and path not in found:
                    found.append(path)
                if nested:
                    walk(nested, path + ".")
                if listed:
                    walk(listed, path + "[].")

    walk([schema], "")
    return found


def test_every_schema_field_has_an_effect_test() -> None:
    fields = schema_fields(experiment_schema())
    missing = [path for path in fields if path not in COVERAGE]
    assert not missing, f"fields without an effect test (add one and list it in COVERAGE): {missing}"
    stale = [path for path in COVERAGE if path not in fields]
    assert not stale, f"COVERAGE lists fields the schema no longer has: {stale}"


def test_every_listed_effect_test_exists() -> None:
    defined: dict[str, set[str]] = {}
    for reference in set(COVERAGE.values()):
        module, name = reference.split("::")
        if module not in defined:
            tree = ast.parse((TESTS / module).read_text())
            defined[module] = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in defined[module], f"{reference} does not exist"
