"""Spec drift: has a run's recipe changed since it started? Checked before a partial run resumes.

A run id hashes the semantic spec (engine/planning/plan.py run_id), so an edited spec is a new run. What
the id cannot see: the contents of data files named in the spec, and what an engine upgrade
changes in the resolved spec or the model shape while the id stays the same. So <run>/spec.yaml
records the resolved run (`run_record`) with a sha256 of every data file, and a run that resumes
compares it with the record it would write now. Differences in what changes training (model
shape, sparsity, init, optimizer, data, seed, data file contents) refuse the resume with one
`field.path: old -> new` line each, unless `engine run --allow-drift`. The run policy, name,
analysis and parallelism never change what a run computes and are not compared (a run saved on 4
devices resumes on 1); another engine version alone is a note, not a refusal.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from engine.planning.plan import RunPlan

RECORD_FILE = "spec.yaml"
# The spec sections that decide what a run computes, as engine/planning/plan.py run_id hashes them; the
# rest (name, sweep, analysis, run policy, parallelism) changes where or how fast, not what.
TRAINING_SECTIONS = ("model", "sparsity", "init", "optimizer", "data", "seed")
PACKAGE = "sparse-scaling-engine"

def engine_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def data_files(run: RunPlan) -> dict[str, str]:
    """Every file the run's data section reads (data paths expanded, a SentencePiece model),
    named relative to the spec's directory as the spec writes them, with its sha256. Empty for
    built-in synthetic data. Digests are memoised in the data cache (engine/data/provenance.py)."""
    from engine.data.provenance import data_file_digests

    return data_file_digests(run.spec.data.source, run.spec_dir)


def run_record(run: RunPlan) -> dict[str, Any]:
    """What <run>/spec.yaml holds: the resolved run spec, its model shape and its data files."""
    return {
        "run_id": run.run_id,
        "engine_version": engine_version(),
        "coordinates": run.coordinates,
        "dims": asdict(run.dims),
        "spec": run.spec.model_dump(mode="json", exclude={"sweep"}),
        "data_files": data_files(run),
    }


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The stored record, None when there is none; raises ValueError when it cannot be read."""
    path = run_dir / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except Exception as error:  # noqa: BLE001 - any YAML/OS error: the record is unreadable
        raise ValueError(f"{path}: unreadable ({type(error).__name__})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a mapping")
    return record


def _training_part(record: dict[str, Any]) -> dict[str, Any]:
    spec = record.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    return {
        "dims": record.get("dims"),
        "spec": {key: value for key, value in spec.items() if key in TRAINING_SECTIONS},
        "data_files": record.get("data_files") or {},
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, dict):
        return {}
    return {prefix: value}


_ABSENT = object()


def _shown(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`field.path: old -> new` for every training-relevant field that differs."""
    before, after = _flatten(_training_part(old)), _flatten(_training_part(new))
    lines = []
    for key in sorted(set(before) | set(after)):
        was, now = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if was != now:
            lines.append(f"{key}: {_shown(was)} -> {_shown(now)}")
    return lines


def drift(run: RunPlan) -> tuple[list[str], str | None]:
    """(differences that change training, a note) between the run's stored record and now;
    ([], None) for a run with no record yet."""
    try:
        old = read_record(run.run_dir)
    except ValueError as error:
        return [str(error)], None
    if old is None:
        return [], None
    new = run_record(run)
    note = None
    if old.get("engine_version") not in (None, new["engine_version"]):
        note = f"started by engine {old.get('engine_version')}, resumed by {new['engine_version']}"
    return differences(old, new), note
