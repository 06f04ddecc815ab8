"""`engine validate --plan`: what only expanding the sweep reveals, one fixture per problem, each
reported at the YAML node that sets the field for the offending sweep point."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from engine.cli import main
from engine.cli.validate import check_paths
from engine.planning.checks import REACH_FACTOR
from spec.model import MAX_D_MODEL

ROOT = Path(__file__).resolve().parent.parent
PLAN = Path(__file__).parent / "fixtures" / "specs" / "plan"


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict]]:
    code = main(["validate", "--plan", "--format", "json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_fixtures_are_valid_without_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(PLAN)]) == 0, capsys.readouterr().out


def test_unreachable_nonzeros_target_at_its_sweep_value(capsys: pytest.CaptureFixture[str]) -> None:
    code, [issue] = validate(capsys, str(PLAN / "unreachable_size.yaml"))
    assert code == 1
    assert (issue["file"], issue["line"], issue["column"], issue["path"]) == (
        str(PLAN / "unreachable_size.yaml"), 8, 22, "model.nonzeros")  # the 500 in the grid's list
    assert issue["message"].startswith("model.nonzeros: 500 non-zeros cannot be reached at sparsity 0: "
                                       "the narrowest model (d_model 64, the width_multiple) already has ")


def test_widths_too_coarse_for_a_target(capsys: pytest.CaptureFixture[str]) -> None:
    code, [issue] = validate(capsys, str(PLAN / "unreachable_size.yaml"), "--set", "model.width_multiple=16",
                             "--set", "sweep.grid.model.nonzeros=[6000]")
    assert code == 1
    message = issue["message"]
    assert f"6000 non-zeros cannot be reached at sparsity 0 within a factor {REACH_FACTOR:g}" in message
    below, above = (int(message.split(f"d_model {width} has ")[1].split()[0].rstrip(";")) for width in (16, 32))
    assert below * REACH_FACTOR < 6000 < above / REACH_FACTOR  # neither neighbour is close enough


def test_a_target_beyond_the_widest_model(capsys: pytest.CaptureFixture[str]) -> None:
    # 1e14 is under the spec's bound (MAX_NONZEROS) but no width up to MAX_D_MODEL reaches it.
    code, [issue] = validate(capsys, str(PLAN / "unreachable_size.yaml"), "--set", "sweep.grid.model.nonzeros=[1e14]")
    assert code == 1
    assert issue["message"].startswith("model.nonzeros: 1e+14 non-zeros cannot be reached at sparsity 0: even the "
                                       f"widest model (d_model {MAX_D_MODEL}, "
                                       f"the largest multiple of 64 up to {MAX_D_MODEL}) has only ")


def test_nm_group_must_divide_fan_in(capsys: pytest.CaptureFixture[str]) -> None:
    code, [issue] = validate(capsys, str(PLAN / "nm_fan_in.yaml"))
    assert code == 1
    assert (issue["line"], issue["column"], issue["path"]) == (10, 32, "sparsity.pattern.m")  # m: 8
    assert "at d_model 20 it does not divide fan_in 20 of decoder/block_*/attn/query/kernel" in issue["message"]
    # A width that m divides everywhere is fine.
    assert validate(capsys, str(PLAN / "nm_fan_in.yaml"), "--set", "model.d_model=24") == (0, [])


def test_gmp_schedule_that_cannot_reach_its_level(capsys: pytest.CaptureFixture[str]) -> None:
    code, [issue] = validate(capsys, str(PLAN / "nm_fan_in.yaml"), "--set", "model.d_model=24",
                             "--set", "sparsity.schedule.interval=100000")  # 20 steps
    assert code == 1 and issue["path"] == "sparsity.schedule.interval"
    assert "every 100000 steps does not reach sparsity 0.75 within" in issue["message"]


def test_duplicate_runs_at_the_later_point(capsys: pytest.CaptureFixture[str]) -> None:
    code, [issue] = validate(capsys, str(PLAN / "duplicate_runs.yaml"))
    assert code == 1
    assert (issue["line"], issue["column"]) == (6, 28)  # the 2100 in [2000, 2100]
    assert issue["message"].startswith(
        "sweep.grid: point {model.nonzeros=2100} is the same run as point {model.nonzeros=2000} (run id ")


def test_pretrained_source_selecting_no_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, [issue] = validate(capsys, str(PLAN / "pretrained_no_run.yaml"))
    assert code == 1
    assert (issue["line"], issue["column"], issue["path"]) == (12, 12, "init.source.where")
    assert "matches no run of" in issue["message"] and "source.yaml" in issue["message"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("init.source.where={model.nonzeros: 2000}", "matches 2 runs of"),
        ("init.source.spec=nope.yaml", "nope.yaml does not exist"),
        ("init.source.spec=../bad/wrong_type.yaml", "../bad/wrong_type.yaml is not a valid spec (1 problem, first: "),
    ],
)
def test_pretrained_source_problems(override: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, [issue] = validate(capsys, str(PLAN / "pretrained_no_run.yaml"), "--set", override)
    assert code == 1 and expected in issue["message"]
    assert issue["path"].startswith("init.source")


def test_pretrained_source_selecting_one_run_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    where = "init.source.where={model.nonzeros: 2000, data.steps: 20}"
    assert validate(capsys, str(PLAN / "pretrained_no_run.yaml"), "--set", where) == (0, [])


def test_text_output_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--plan", str(PLAN)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "5 spec files checked, 1 valid, 4 errors"
    assert lines[0].startswith(f"{PLAN / 'duplicate_runs.yaml'}:6:28: sweep.grid: point ")


def test_repository_examples_plan_cleanly_and_fast() -> None:
    started = time.process_time()
    issues, checked, valid = check_paths([ROOT / "experiments"], [], with_plan=True)
    spent = time.process_time() - started
    assert (issues, checked) == ([], valid)
    assert checked >= 6
    assert spent < 10, f"--plan over experiments/ took {spent:.1f} s of CPU"


def test_a_broken_source_of_a_source_is_reported_at_the_spec_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """a.yaml's source b.yaml is valid but its own source selection fails: a.yaml is told that b.yaml
    cannot be planned (at init.source.spec), b.yaml gets the selection error at its `where`."""
    shutil.copy(PLAN / "source.yaml", tmp_path / "source.yaml")
    broken = (PLAN / "pretrained_no_run.yaml").read_text()
    (tmp_path / "b.yaml").write_text(broken.replace("name: pretrained_no_run", "name: b"))
    (tmp_path / "a.yaml").write_text(
        broken.replace("name: pretrained_no_run", "name: a").replace("spec: source.yaml", "spec: b.yaml")
        .replace("model.nonzeros: 3000", "model.nonzeros: 2000")
    )
    code, issues = validate(capsys, str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))
    assert code == 1
    assert [(Path(i["file"]).name, i["line"], i["path"]) for i in issues] == [
        ("a.yaml", 11, "init.source.spec"), ("b.yaml", 12, "init.source.where")]
    assert issues[0]["message"].startswith("init.source.spec: b.yaml cannot be planned: init.source.where ")


# --- checks `engine run` also makes before training: vocabulary, holdout, enough runs to fit -----

DECODER_TEXT = """\
name: text
model:
  kind: decoder
  base: {layers: 1, num_heads: 2, mlp_ratio: 2.0, vocab_size: 200, seq_len: 16}
  d_model: 16
sparsity: {level: 0.0}
optimizer: {kind: adamw, learning_rate: {kind: constant, value: 1.0e-3}}
data:
  source: {kind: text_files, paths: [corpus.txt], tokenizer: {kind: bytes}}
  steps: 4
  batch_size: 2
  eval_every: 2
analysis: {fit: null}
"""


def test_a_vocabulary_smaller_than_the_bytes_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "text.yaml"
    spec.write_text(DECODER_TEXT)
    code, [issue] = validate(capsys, str(spec))
    assert code == 1 and issue["path"] == "data.source.tokenizer"
    assert issue["line"] == 9  # the tokenizer of data.source
    assert "needs 259 token ids" in issue["message"] and "at least 259" in issue["message"]
    spec.write_text(DECODER_TEXT.replace("vocab_size: 200", "vocab_size: 259"))
    assert validate(capsys, str(spec)) == (0, [])


def tiny_with_fit(tmp_path: Path, fit: str, grid: str = "model.nonzeros: [1000, 2000]") -> Path:
    text = (ROOT / "tests/fixtures/run/tiny_vit.yaml").read_text()
    text = text.replace("  fit: null\n", f"  fit: {fit}\n").replace("model.nonzeros: [1000, 2000]", grid)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(text)
    return spec


def test_a_sweep_too_small_for_the_fit_is_refused_at_the_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tiny_with_fit(tmp_path, "{holdout: {kind: none}}")  # 2 x 2 = 4 runs for 7 coefficients
    code, [issue] = validate(capsys, str(spec))
    assert code == 1 and (issue["line"], issue["column"]) == (19, 1)  # the `sweep` key
    assert issue["message"] == ("sweep: too few runs for analysis.fit: the law's 7 free coefficients need at least 8 "
                                "fitted runs; the spec has 4 runs from scratch, leaving 4. Add sweep points, change "
                                "the holdout, or set analysis.fit: null")
    spec = tiny_with_fit(tmp_path, "{}", grid="model.nonzeros: [1000, 2000, 4000, 8000]")  # 8 runs, 2 held out
    code, [issue] = validate(capsys, str(spec))
    assert "the spec has 8 runs from scratch, 2 of them held out by analysis.fit.holdout, leaving 6" in issue["message"]
    spec = tiny_with_fit(tmp_path, "{}", grid="model.nonzeros: [1000, 2000, 4000, 8000, 16000]")  # 10 runs, 8 fitted
    assert validate(capsys, str(spec)) == (0, [])


def test_an_nm_refit_needs_four_runs_per_group_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "nm.yaml"
    spec.write_text((ROOT / "experiments/nm_sweep.yaml").read_text().replace(
        "data.steps: [50, 50, 50, 200, 800]", "data.steps: [50, 50, 50, 200, 800]\n"
        "    sparsity.pattern: [{kind: nm, n: 2, m: 4}, {kind: nm, n: 2, m: 4}, {kind: nm, n: 2, m: 4}, "
        "{kind: nm, n: 2, m: 8}, {kind: nm, n: 2, m: 8}]").replace(
        "  grid:                    # an n:m pattern fixes the level, 1 - n/m: no level axis\n"
        "    sparsity.pattern:\n      - {kind: nm, n: 2, m: 4}\n      - {kind: nm, n: 1, m: 4}\n"
        "      - {kind: nm, n: 4, m: 8}\n      - {kind: nm, n: 2, m: 8}\n", "").replace(
        "extends: vit_sweep.yaml", f"extends: {ROOT / 'experiments/vit_sweep.yaml'}"))
    code, [issue] = validate(capsys, str(spec))
    assert code == 1 and issue["message"] == (
        "sweep: too few runs for analysis.nm_refit: it fits 3 free coefficients (a_S, b_S, c_S) per group size m and "
        "needs at least 4 runs of each; the spec has 3 runs of n:4, 2 runs of n:8")


@pytest.mark.parametrize("coordinates, line, column, message", [
    ("[{model.nonzeros: 3000}]", 25, 41,
     "analysis.fit.holdout.coordinates[0]: selects no run: no sweep point has all these values"),
    ("[{model.nonzeros: 1000}, {data.steps: 16}]", 25, 65,
     "analysis.fit.holdout.coordinates[1]: selects no run: data.steps is not a sweep axis "
     "(axes: model.nonzeros, sparsity.level)"),
    ("[{model.nonzeros: 1000}, {model.nonzeros: 2000}]", 25, 5,
     "analysis.fit.holdout: selects every one of the 4 from-scratch runs; none would be left to fit"),
])
def test_a_holdout_selecting_no_run_or_every_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], coordinates: str, line: int, column: int, message: str
) -> None:
    spec = tiny_with_fit(tmp_path, f"\n    holdout: {{kind: runs, coordinates: {coordinates}}}")
    code, issues = validate(capsys, str(spec))
    assert code == 1 and (issues[0]["line"], issues[0]["column"], issues[0]["message"]) == (line, column, message)


def test_engine_run_refuses_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tiny_with_fit(tmp_path, "{holdout: {kind: none}}")
    assert main(["run", str(spec), "--set", f"run.output_dir={tmp_path / 'runs'}"]) == 1
    assert "19:1: sweep: too few runs for analysis.fit" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_set_of_a_swept_field_names_the_axis(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(ROOT / "tests/fixtures/run/tiny_vit.yaml")
    assert main(["validate", spec, "--set", "sparsity.level=0.9"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        "--set sparsity.level=0.9: sparsity.level: the sweep axis sweep.grid.sparsity.level also sets this field at "
        "every sweep point, which would replace the override; set the axis instead "
        "(--set 'sweep.grid.sparsity.level=[...]') or remove it")
    assert main(["validate", spec, "--set", "sweep.grid.sparsity.level=[0.9]", "--set", "model.width_multiple=8"]) == 0


def test_set_of_a_mapping_holding_a_swept_field_is_an_error_only_when_it_sets_that_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--set sparsity={...}` replaces what the axis sparsity.level sets only if it names `level`."""
    spec = str(ROOT / "tests/fixtures/run/tiny_vit.yaml")
    holding = "sparsity={pattern: {kind: unstructured}, schedule: {kind: gmp, start: 0.25, end: 0.75, interval: 2}, level: 0.5}"
    assert main(["validate", spec, "--set", holding]) == 1
    assert "the sweep axis sweep.grid.sparsity.level also sets this field" in capsys.readouterr().out
    leaving = "sparsity={pattern: {kind: unstructured}, schedule: {kind: gmp, start: 0.25, end: 0.75, interval: 2}}"
    assert main(["validate", spec, "--set", leaving]) == 0
