"""The `engine-validate` pre-commit hook, run by pre-commit itself on a throwaway repository with
one valid and one invalid spec.

The fast test runs the hook's own definition (entry, files, exclude, pass_filenames from
.pre-commit-hooks.yaml) as a local hook on this environment's `engine`; the slow one lets
pre-commit install the hook from a clone of this repository at HEAD into its own environment,
as a user's repository would (that pip-installs the project and its dependencies: about a minute).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
GOOD = Path(__file__).parent / "fixtures" / "specs" / "good" / "minimal.yaml"
BAD = Path(__file__).parent / "fixtures" / "specs" / "bad" / "unknown_key.yaml"
BIN = Path(sys.executable).parent
PRE_COMMIT = shutil.which("pre-commit", path=str(BIN)) or "pre-commit"


def hook_definition() -> dict[str, Any]:
    [hook] = YAML(typ="safe").load((ROOT / ".pre-commit-hooks.yaml").read_text())
    return hook


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def user_repository(tmp_path: Path, config: str) -> Path:
    """A git repository with specs/good.yaml (valid), specs/bad.yaml (invalid), a YAML file
    that is not a spec (a CI workflow) and the given .pre-commit-config.yaml, all committed."""
    repo = tmp_path / "user"
    (repo / "specs").mkdir(parents=True)
    (repo / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(GOOD, repo / "specs" / "good.yaml")
    shutil.copy(BAD, repo / "specs" / "bad.yaml")
    (repo / ".github" / "workflows" / "ci.yml").write_text("on: push\njobs: {}\n")
    (repo / ".pre-commit-config.yaml").write_text(config)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "specs")
    return repo


def pre_commit(repo: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([PRE_COMMIT, "run", "--all-files", "--color", "never"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)


def check_fails_then_passes(repo: Path, tmp_path: Path) -> None:
    failed = pre_commit(repo, tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "specs/bad.yaml:7:1: unknown key `sparsty` (did you mean `sparsity`?)" in failed.stdout
    assert "2 spec files checked, 1 valid, 1 error" in failed.stdout  # the workflow file is not a spec
    (repo / "specs" / "bad.yaml").write_text(BAD.read_text().replace("sparsty:", "sparsity:"))
    git(repo, "add", "specs/bad.yaml")
    passed = pre_commit(repo, tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Passed" in passed.stdout


def test_hook_definition() -> None:
    hook = hook_definition()
    assert hook["id"] == "engine-validate"
    assert (hook["language"], hook["entry"], hook["pass_filenames"]) == ("python", "engine validate", True)


def test_hook_definition_runs_under_pre_commit(tmp_path: Path) -> None:
    """The hook exactly as defined, except that it runs this environment's `engine` (language
    `system`) instead of installing the project into a fresh environment."""
    hook = hook_definition() | {"language": "system"}
    local = {"repos": [{"repo": "local", "hooks": [hook]}]}
    config = tmp_path / "config.yaml"
    YAML(typ="safe", pure=True).dump(local, config)
    repo = user_repository(tmp_path, config.read_text())
    check_fails_then_passes(repo, tmp_path)


@pytest.mark.slow
def test_hook_installed_from_a_clone_of_this_repository(tmp_path: Path) -> None:
    source = tmp_path / "sparse-scaling-engine"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(source)], check=True, capture_output=True)
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, check=True, capture_output=True, text=True)
    config = (
        f"repos:\n  - repo: {source.as_posix()}\n    rev: {revision.stdout.strip()}\n"
        "    hooks:\n      - id: engine-validate\n"
    )
    repo = user_repository(tmp_path, config)
    check_fails_then_passes(repo, tmp_path)
