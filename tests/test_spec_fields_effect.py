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
