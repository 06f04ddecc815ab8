"""`engine inspect CHECKPOINT_DIR [--json]`: what a run's newest verified checkpoint holds.

Prints the step, each tensor's shape and realised sparsity (counted from exact zeros), whether
every n:m group holds at most n non-zeros, and parameter counts. CHECKPOINT_DIR is a run's
`checkpoints/` directory (or the run directory); the run's spec.yaml beside it says the model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ruamel.yaml import YAML

from engine.errors import UserError
from engine.planning.sizing import ModelDims


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="step, per-tensor sparsity, n:m validity and sizes of a checkpoint",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("checkpoints", type=Path, metavar="CHECKPOINT_DIR",
                        help="a run's checkpoints/ directory or the run directory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def _run_record(run_dir: Path) -> dict:
    path = run_dir / "spec.yaml"
    try:
        record = YAML(typ="safe").load(path.read_text())
        return {"dims": ModelDims(**record["dims"]), "pattern": record["spec"]["sparsity"]["pattern"],
                "run_id": record["run_id"], "target": record["spec"]["sparsity"]["level"],
                "embedding_target": _embedding_target(record)}
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: cannot read the run's spec ({error}); is this a run's checkpoint directory?") from error


def _embedding_target(record: dict) -> float | None:
    """T5's matched embeddings' level (targets backbone_and_matched_embeddings), as planned."""
    if record["spec"]["sparsity"].get("targets") != "backbone_and_matched_embeddings":
        return None
    from engine.planning.plan import embedding_sparsity
    from spec.experiment import ExperimentSpec

    return embedding_sparsity(ExperimentSpec.model_validate(record["spec"]), ModelDims(**record["dims"]))


def run(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from engine.sparsity import NM, sparsified_tree, sparsity_report
    from engine.sparsity.masks import path_name
    from engine.sparsity.report import MATCHED_EMBEDDINGS
    from engine.training.checkpoint import CheckpointStore, read_params

    directory: Path = args.checkpoints
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        raise UserError(f"{directory}: no such checkpoint directory")
    record = _run_record(directory.parent)
    dims = record["dims"]
    pattern = NM(record["pattern"]["n"], record["pattern"]["m"]) if record["pattern"]["kind"] == "nm" else None
    with CheckpointStore(directory, keep=1_000_000) as store:
        step = store.latest_verified_step()
        if step is None:
            raise UserError(f"{directory}: no complete, verified checkpoint")
    # Parameters only, onto one device: a checkpoint saved on any mesh can be inspected here.
    params = jax.tree.map(np.asarray, read_params(directory / str(step)))
    embedding_target = record["embedding_target"]
    groups = sparsified_tree(params, dims, matched_embeddings=embedding_target is not None)
    rows = sparsity_report(params, groups, pattern)
    matched = {path_name(path) for path, group in jax.tree_util.tree_flatten_with_path(groups)[0]
               if group == MATCHED_EMBEDDINGS}
    # N and its sparsity count the backbone group; matched embeddings have their own target.
    sparse_rows = [r for r in rows if r.sparsified and r.path not in matched]
    summary = {
        "run_id": record["run_id"], "step": step, "target_sparsity": record["target"],
        "embedding_target_sparsity": embedding_target,
        "pattern": f"{pattern.n}:{pattern.m}" if pattern else "unstructured",
        "total_params": sum(r.size for r in rows),
        "sparsified_params": sum(r.size for r in sparse_rows),
        "nonzeros": sum(r.nonzeros for r in sparse_rows),
        "sparsity": 1 - sum(r.nonzeros for r in sparse_rows) / max(1, sum(r.size for r in sparse_rows)),
        "nm_valid": all(r.nm_valid for r in sparse_rows) if pattern else None,
        "tensors": [{"path": r.path, "shape": list(r.shape), "nonzeros": r.nonzeros,
                     "sparsity": r.sparsity, "sparsified": r.sparsified, "nm_valid": r.nm_valid,
                     "matched_embedding": r.path in matched}
                    for r in rows],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"run {summary['run_id']}  step {step}  pattern {summary['pattern']}  "
          f"target sparsity {summary['target_sparsity']:g}"
          + ("" if embedding_target is None else f"  matched embeddings' target {embedding_target:.4g}"))
    print(f"{'tensor':<44} {'shape':>14} {'non-zeros':>10} {'sparsity':>9}  n:m")
    for r in rows:
        nm = "" if r.nm_valid is None else ("ok" if r.nm_valid else "VIOLATED")
        mark = "  (matched embedding)" if r.path in matched else ("" if r.sparsified else "  (dense)")
        print(f"{r.path:<44} {'x'.join(map(str, r.shape)):>14} {r.nonzeros:>10} {r.sparsity:>9.4f}  {nm}{mark}")
    print(f"total params {summary['total_params']}, sparsified {summary['sparsified_params']}, "
          f"non-zeros {summary['nonzeros']} (sparsity {summary['sparsity']:.4f})"
          + ("" if pattern is None else f", n:m {'holds' if summary['nm_valid'] else 'VIOLATED'}"))
    return 0
