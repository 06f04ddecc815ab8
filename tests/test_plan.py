"""Run plans: the paper's grids, sizes/D/FLOPs against hand-computed values, run identity, status."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from engine.cli.plan import render_table
from engine.errors import UserError
from engine.planning import sizing
from engine.planning.plan import RunPlan, cost_multiplier, plan_experiment, read_status, source_settings, totals
from spec.sparsity import SparsitySpec

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
MINIMAL = Path(__file__).parent / "fixtures" / "specs" / "good" / "minimal.yaml"


@pytest.fixture(scope="module")
def vit_jft() -> list[RunPlan]:
    return plan_experiment(EXPERIMENTS / "paper" / "vit_jft.yaml")


@pytest.fixture(scope="module")
def t5_c4() -> list[RunPlan]:
    return plan_experiment(EXPERIMENTS / "paper" / "t5_c4.yaml")


def test_paper_grids_have_table1_run_counts(vit_jft: list[RunPlan], t5_c4: list[RunPlan]) -> None:
    assert len(vit_jft) == 7 * 4 * 4 == 112
    assert len(t5_c4) == 4 * 3 * 4 == 48
    assert len({plan.run_id for plan in vit_jft + t5_c4}) == 160


# Table 1 as printed: ViT 0.66M, 1.33M, ..., 42.4M in 2x steps; T5 1.3M, 5.3M, ..., 85M in 4x steps.
VIT_TARGETS = [0.66e6, 1.33e6, 2.65e6, 5.3e6, 10.6e6, 21.2e6, 42.4e6]
T5_TARGETS = [1.3e6, 5.3e6, 21e6, 85e6]


@pytest.mark.parametrize("grid, targets", [("vit_jft", VIT_TARGETS), ("t5_c4", T5_TARGETS)])
def test_nonzeros_within_two_percent_of_table1(grid: str, targets: list[float], request: pytest.FixtureRequest) -> None:
    plans: list[RunPlan] = request.getfixturevalue(grid)
    for plan in plans:
        target = min(targets, key=lambda t: abs(math.log(plan.nonzeros / t)))
        assert abs(plan.nonzeros / target - 1) < 0.02, (plan.coordinates, plan.nonzeros, target)
    assert {plan.steps for plan in plans} == (
        {55_000, 110_000, 220_000, 440_000} if grid == "vit_jft" else {250_000, 500_000, 1_000_000}
    )
    assert {plan.sparsity for plan in plans} == {0.0, 0.5, 0.75, 0.875}


def test_vit_jft_largest_dense_model_is_half_width_b16(vit_jft: list[RunPlan]) -> None:
    # 42.4M non-zeros dense = 12 layers x 12 d^2 at d = 768 / sqrt(2) ~ 543: the exact count picks 544.
    plan = next(p for p in vit_jft if p.coordinates["model.nonzeros"] == 42467328 and p.sparsity == 0)
    assert plan.d_model == 544
    assert plan.nonzeros == 12 * (4 * 544 * 12 * 45 + 2 * 544 * 2176)  # head width round(544/12) = 45
    # 87.5% sparse at the same N: the full ViT-B/16 width, every kernel keeps exactly 1/8.
    sparse = next(p for p in vit_jft if p.coordinates["model.nonzeros"] == 42467328 and p.sparsity == 0.875)
    assert (sparse.d_model, sparse.dims.head_dim, sparse.dims.mlp_dim) == (1536, 128, 6144)


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


VIT_B16 = """
name: b16
model: {kind: vit, preset: vit-b16, d_model: 768}
sparsity: {level: 0.5}
optimizer: {kind: adamw, learning_rate: {kind: constant, value: 1.0e-3}}
data: {source: {kind: synthetic_images}, steps: 1000, batch_size: 4096, eval_every: 100}
"""


def test_vit_b16_sizes_data_and_flops_by_hand(tmp_path: Path) -> None:
    [plan] = plan_experiment(write_spec(tmp_path, VIT_B16))
    d, mlp, layers, classes = 768, 3072, 12, 29593
    kernels = layers * (4 * d * d + 2 * d * mlp)
    assert plan.dense_params == kernels == 84_934_656
    assert plan.nonzeros == kernels // 2
    per_block = 4 * d + (4 * d * d + 4 * d) + (2 * d * mlp + mlp + d)  # 2 layer norms, attention, MLP
    embed = 16 * 16 * 3 * d + d + 196 * d
    assert plan.total_params == embed + layers * per_block + 2 * d + d * classes + classes
    assert plan.examples == plan.data == 1000 * 4096 and plan.data_unit == "examples"
    c_mul = (0.25 + 0.5 * (1 - 0.75 * 0.5)) / 0.5 + 0.25  # eq. 4 at S = 0.5: 1.375
    assert plan.c_mul == pytest.approx(1.375) == pytest.approx(c_mul)
    assert plan.flops_dense == pytest.approx(6 * kernels * 4_096_000)
    assert plan.flops_sparse == pytest.approx(6 * (kernels // 2) * 4_096_000 * 1.375)


def test_t5_data_in_tokens_and_half_flops(t5_c4: list[RunPlan]) -> None:
    plan = next(p for p in t5_c4 if p.steps == 250_000 and p.sparsity == 0.75)
    assert plan.data == 250_000 * 128 * 512 and plan.data_unit == "tokens"  # 65,536 tokens per step
    assert plan.flops_dense == pytest.approx(3 * plan.dense_params * plan.data)
    c_mul = (0.25 + 0.5 * (1 - 0.75 * 0.75)) / 0.25 + 0.25
    assert plan.flops_sparse == pytest.approx(3 * plan.nonzeros * plan.data * c_mul)


def test_t5_base_backbone_count_by_hand(tmp_path: Path) -> None:
    text = VIT_B16.replace("{kind: vit, preset: vit-b16, d_model: 768}", "{kind: t5, preset: t5-base-v1.1, d_model: 768}")
    text = text.replace("synthetic_images", "synthetic_tokens")
    [plan] = plan_experiment(write_spec(tmp_path, text))
    d, mlp = 768, 2048
    encoder = 12 * (4 * d * d + 3 * d * mlp)  # attention + gated MLP (wi_0, wi_1, wo)
    decoder = 12 * (8 * d * d + 3 * d * mlp)  # self- and cross-attention + gated MLP
    assert plan.dense_params == encoder + decoder
    assert plan.data == 1000 * 4096 * 512


def test_embeddings_targets_count_embedding_and_head(tmp_path: Path) -> None:
    text = VIT_B16.replace("{kind: vit, preset: vit-b16, d_model: 768}", "{kind: t5, preset: t5-base-v1.1, d_model: 768}")
    text = text.replace("synthetic_images", "synthetic_tokens")
    [backbone] = plan_experiment(write_spec(tmp_path, text, "a.yaml"))
    text = text.replace("{level: 0.5}", "{level: 0.5, targets: backbone_and_embeddings}")
    [with_embeddings] = plan_experiment(write_spec(tmp_path, text, "b.yaml"))
    assert with_embeddings.dense_params - backbone.dense_params == 2 * 32128 * 768


@pytest.mark.parametrize("level, dense_width", [(0.75, 384), (0.5, 544), (0.0, 768)])
def test_matched_embeddings_keep_the_smaller_dense_models_embedding(tmp_path: Path, level: float,
                                                                      dense_width: int) -> None:
    """The paper's rule (appendix A): T5's embeddings are pruned only to the size of the smaller
    dense model with the backbone's non-zeros. t5-base at d = 768 keeps 1/4 of its backbone at
    S = 0.75: a dense t5 of width 384 has exactly that backbone (both terms scale as d^2 and
    768 / 2 keeps whole heads and MLP), so the embeddings keep 384 of 768 columns, level 0.5. At
    S = 0.5 the closest dense width is 544 (768 / sqrt 2 = 543.06). N counts the backbone only."""
    text = VIT_B16.replace("{kind: vit, preset: vit-b16, d_model: 768}", "{kind: t5, preset: t5-base-v1.1, d_model: 768}")
    text = text.replace("synthetic_images", "synthetic_tokens").replace("{level: 0.5}", f"{{level: {level}}}")
    [backbone] = plan_experiment(write_spec(tmp_path, text, "a.yaml"))
    text = text.replace(f"{{level: {level}}}", f"{{level: {level}, targets: backbone_and_matched_embeddings}}")
    [matched] = plan_experiment(write_spec(tmp_path, text, "b.yaml"))
    assert (matched.nonzeros, matched.dense_params) == (backbone.nonzeros, backbone.dense_params)
    assert backbone.embedding_sparsity is None
    assert matched.embedding_sparsity == pytest.approx(1 - dense_width / 768)
    assert matched.to_json()["embedding_sparsity"] == matched.embedding_sparsity
    # The smaller dense model really has (about) the backbone's non-zeros.
    dense = sizing.scaled_dims(replace(matched.dims, d_model=1), dense_width, 2048 / 768)
    assert sizing.sparsified_params(dense) == pytest.approx(matched.nonzeros, rel=0.005)
    assert "S emb" in render_table([matched]) and "S emb" not in render_table([backbone])


@pytest.mark.parametrize(
    "sparsity, expected",
    [
        ({"level": 0.5}, 1.375),
        ({"level": 0.75, "schedule": {"kind": "oneshot", "at": 0.5}}, 0.5 / 0.25 + 0.5),
        ({"level": 0.5, "schedule": {"kind": "gmp", "start": 0.0, "end": 1.0}}, (1 - 0.375) / 0.5),
        ({"level": 0.0, "schedule": {"kind": "dense"}}, 1.0),
        ({"level": 0.0}, 1.0),
    ],
)
def test_cost_multiplier_per_schedule(sparsity: dict, expected: float) -> None:
    assert cost_multiplier(SparsitySpec.model_validate(sparsity)) == pytest.approx(expected)


def run_ids(path: Path, overrides: list[str] | None = None) -> list[str]:
    return [plan.run_id for plan in plan_experiment(path, overrides or [])]


def test_run_id_is_stable_across_formatting_and_non_semantic_fields(tmp_path: Path) -> None:
    original = run_ids(MINIMAL)
    assert len(original[0]) == 12 and original == run_ids(MINIMAL)
    reordered = write_spec(
        tmp_path,
        "# a comment\n"
        "data: {eval_every: 10, batch_size: 4, steps: 20, source: {kind: synthetic_tokens, seed: 0}}\n"
        "optimizer: {learning_rate: {value: 0.001, kind: constant}, kind: adamw, b1: 0.9}\n"
        "sparsity: {level: 0.5, pattern: {kind: unstructured}}\n"
        "model: {d_model: 16, kind: decoder, base: {seq_len: 16, vocab_size: 96, mlp_ratio: 4, num_heads: 2, layers: 2}}\n"
        "name: another_name\n"
        "run: {output_dir: elsewhere, keep: 5}\n"
        "analysis: {fit: null}\n",
    )
    assert run_ids(reordered) == original


def test_run_id_is_the_same_for_a_preset_and_its_values_spelt_out(tmp_path: Path) -> None:
    spelt_out = VIT_B16.replace(
        "preset: vit-b16",
        "base: {layers: 12, num_heads: 12, mlp_ratio: 4.0, image_size: 224, patch_size: 16, channels: 3, num_classes: 29593}",
    )
    assert run_ids(write_spec(tmp_path, VIT_B16, "a.yaml")) == run_ids(write_spec(tmp_path, spelt_out, "b.yaml"))


@pytest.mark.parametrize(
    "override",
    [
        "seed=1",
        "data.steps=21",
        "data.batch_size=8",
        "data.source.seed=3",
        "sparsity.level=0.75",
        "sparsity.schedule={kind: gmp, interval: 50}",
        "optimizer.learning_rate.value=2e-3",
        "optimizer.weight_decay=0.1",
        "model.d_model=18",
        "model.base.layers=3",
    ],
)
def test_run_id_changes_with_anything_that_alters_training(override: str) -> None:
    assert run_ids(MINIMAL, [override]) != run_ids(MINIMAL)


def test_run_id_ignores_the_size_target_when_it_resolves_to_the_same_model() -> None:
    # The identity is the model actually trained: d_model 16 given directly or chosen from N.
    [plan] = plan_experiment(MINIMAL)
    assert run_ids(MINIMAL, ["model.d_model=null", f"model.nonzeros={plan.nonzeros}"]) == [plan.run_id]


def test_sweep_points_that_are_the_same_run_are_refused(tmp_path: Path) -> None:
    path = write_spec(tmp_path, MINIMAL.read_text() + "sweep:\n  grid:\n    seed: [1, 2, 1]\n")
    with pytest.raises(UserError, match="are the same run"):
        plan_experiment(path)


def test_status_from_the_output_directory(tmp_path: Path) -> None:
    plans = plan_experiment(MINIMAL, ["sweep.grid.seed=[0, 1, 2, 3, 4]"], working_dir=tmp_path)
    assert {plan.status.state for plan in plans} == {"new"}
    contents = [
        None,  # directory exists, no status yet
        {"state": "running", "step": 7, "reason": None},
        {"state": "done", "step": 20, "reason": None},
        {"state": "failed", "step": 3, "reason": "loss is NaN"},
    ]
    for plan, content in zip(plans[1:], contents, strict=True):
        run_dir = tmp_path / plan.run_dir
        run_dir.mkdir(parents=True)
        if content is not None:
            (run_dir / "status.json").write_text(json.dumps(content))
    described = [p.status.describe() for p in plan_experiment(MINIMAL, ["sweep.grid.seed=[0, 1, 2, 3, 4]"], working_dir=tmp_path)]
    assert described == ["new", "new", "partial at step 7", "done", "failed (loss is NaN)"]
    assert plans[0].run_dir == Path("runs") / "minimal" / plans[0].run_id


def test_unreadable_status_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text("{not json")
    status = read_status(tmp_path)
    assert status.state == "partial" and "unreadable status.json" in (status.reason or "")


def test_totals_sum_runs_and_flops(vit_jft: list[RunPlan]) -> None:
    total = totals(vit_jft)
    assert total["runs"] == total["new"] == 112
    assert total["flops_sparse"] == pytest.approx(sum(p.flops_sparse for p in vit_jft))
    assert total["flops_sparse"] < total["flops_dense"]


def test_source_settings_fit_the_data_builders() -> None:
    from engine.data.build import make_settings

    for name in ("vit_sweep.yaml", "t5_sweep.yaml", "paper/vit_jft.yaml", "paper/t5_c4.yaml"):
        data = plan_experiment(EXPERIMENTS / name)[0].spec.data
        settings = make_settings(data.source.kind, source_settings(data))
        assert type(settings).__name__.lower().startswith(data.source.kind.replace("_", ""))
    t5 = plan_experiment(EXPERIMENTS / "paper" / "t5_c4.yaml")[0].spec.data
    assert source_settings(t5)["tokenizer"] == {"kind": "sentencepiece", "model": "c4/spiece.model"}
    assert make_settings("text_files", source_settings(t5)).tokenizer == "c4/spiece.model"
    assert source_settings(t5)["on_exhausted"] == "refuse"


def test_planning_imports_no_jax() -> None:
    code = (
        "import sys; from engine.planning.plan import plan_experiment; "
        "plan_experiment('experiments/paper/vit_jft.yaml'); print('jax' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "False"


def test_a_flops_budget_sets_the_steps_and_the_isoflop_sweep_meets_every_budget_within_2_percent() -> None:
    spec = Path(__file__).resolve().parent.parent / "experiments" / "isoflop_sweep.yaml"
    runs = plan_experiment(spec)
    assert len(runs) == 30 and {run.coordinates["data.flops"] for run in runs} == {1.25e8, 2.5e8, 5e8}
    for run in runs:
        assert run.flops_sparse == pytest.approx(run.spec.data.flops, rel=0.02), run.run_id
        # steps are what the budget buys: C / (6 N c_mul x batch), rounded
        assert run.steps == round(run.spec.data.flops / (6 * run.nonzeros * run.c_mul * run.batch_size))
    by_size = {run.coordinates["model.nonzeros"]: run.steps for run in runs
               if run.coordinates["data.flops"] == 2.5e8 and run.sparsity == 0}
    assert by_size[300] > by_size[5000] * 10  # a bigger model gets fewer steps of the same budget


def test_steps_and_flops_together_are_refused_at_the_second_budget(tmp_path: Path) -> None:
    from spec.issues import SpecError
    from spec.loading import load_experiment

    base = (Path(__file__).resolve().parent / "fixtures" / "run" / "tiny_vit.yaml").read_text()
    spec = tmp_path / "both.yaml"
    spec.write_text(base.replace("  steps: 16\n", "  steps: 16\n  flops: 1.0e+8\n"))
    with pytest.raises(SpecError) as error:
        load_experiment(spec)
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), start=1) if "flops:" in text)
    assert any(f"both.yaml:{line}:" in str(issue) and "one training budget" in str(issue) for issue in error.value.issues)
