"""`engine data prepare|summary SPEC [--set PATH=VALUE]`: the prepared data cache of a spec.

prepare: turn every distinct file source of the spec's runs into the shared, content-addressed
    cache (reading, tokenizing, training a SentencePiece model the spec asks for), in parallel
    over files with a progress bar; finished shards are kept, so an interrupted prepare resumes.
    `engine run` does the same on its own when a run needs it.
summary: what each source holds, from the cache manifest when it is prepared and from file sizes
    (an estimate) when not, against what each run needs (examples and epochs).
The cache lives in $ENGINE_DATA_CACHE, else $XDG_CACHE_HOME/sparse-scaling-engine/data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from engine.planning.plan import RunPlan, plan_experiment, source_settings

FILE_SOURCES = ("text_files", "image_records")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="prepare the shared data cache of a spec, or summarise it",
        description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION",
                                    help="prepare: build the cache of a spec's file sources; summary: what it holds")
    for name, text in (("prepare", "tokenize (or index) the spec's data files into the shared cache"),
                       ("summary", "examples and tokens each source holds against what each run needs")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("spec", type=Path, metavar="SPEC", help="experiment spec file")
        action.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
            help="override a field before validation (repeatable)",
        )
        if name == "prepare":
            action.add_argument("--workers", type=int, default=None, metavar="N",
                                help="processes tokenizing files at once (default: the CPU count)")
        else:
            action.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=run)


def distinct_sources(plans: list[RunPlan]) -> list[tuple[RunPlan, list[RunPlan]]]:
    """One representative run per distinct file source (what the cache depends on), with every
    run that reads it."""
    groups: dict[str, tuple[RunPlan, list[RunPlan]]] = {}
    for plan in plans:
        source = plan.spec.data.source
        if source.kind not in FILE_SOURCES:
            continue
        settings = source_settings(plan.spec.data)
        identity = json.dumps({"kind": source.kind, "dir": plan.spec_dir.as_posix(), **{
            key: value for key, value in settings.items()
            if key not in ("on_exhausted", "eval_fraction", "eval_batch_size", "max_eval_examples")}},
            sort_keys=True, default=str)
        groups.setdefault(identity, (plan, []))[1].append(plan)
    return list(groups.values())


def prepare_source(plan: RunPlan, workers: int | None) -> dict[str, Any]:
    """Prepare one source's cache; its counts for printing."""
    from engine.data.build import make_settings

    source = plan.spec.data.source
    settings = make_settings(source.kind, source_settings(plan.spec.data), source.seed)
    if source.kind == "text_files":
        from engine.data.text import prepared_manifest, text_source

        manifest = prepared_manifest(text_source(settings, plan.spec_dir), workers, bar=True)  # type: ignore[arg-type]
        return {"key": manifest.key, "files": len(manifest.shards), "documents": manifest.documents,
                "tokens": manifest.tokens, "tokenizer": manifest.tokenizer}
    from engine.data.files import resolve_paths
    from engine.data.images import prepare_images
    from engine.data.progress import byte_progress

    files = tuple(resolve_paths(settings.paths, plan.spec_dir))  # type: ignore[union-attr]
    total = sum(path.stat().st_size for path in files)
    with byte_progress(total, f"preparing {len(files)} image file(s)", bar=True) as advance:
        images = prepare_images(settings, files, workers=workers, progress=advance)  # type: ignore[arg-type]
    return {"key": images["key"], "files": len(images["shards"]), "images": images["images"]}


def run(args: argparse.Namespace) -> int:
    plans = plan_experiment(args.spec, args.overrides)
    groups = distinct_sources(plans)
    if not groups:
        print(f"{args.spec}: no run reads data files (built-in synthetic data needs no preparation)")
        return 0
    if args.action == "prepare":
        for plan, _ in groups:
            counts = prepare_source(plan, args.workers)
            what = ", ".join(f"{value} {name}" for name, value in counts.items() if name not in ("key", "tokenizer"))
            print(f"prepared {_label(plan)}: {what} (cache {counts['key']})")
        return 0
    return _summary(groups, args.json)


def _label(plan: RunPlan) -> str:
    paths = plan.spec.data.source.paths  # type: ignore[union-attr]
    return f"{plan.spec.data.source.kind} {', '.join(paths)}"


def _summary(groups: list[tuple[RunPlan, list[RunPlan]]], as_json: bool) -> int:
    from engine.planning.data_budget import data_budget

    document = []
    for plan, runs in groups:
        budgets = [(run, data_budget(run)) for run in runs]
        entry: dict[str, Any] = {"source": _label(plan), "runs": []}
        for run, budget in budgets:
            if budget is None:
                entry["runs"].append({"run_id": run.run_id, "missing": True})
                continue
            entry["prepared"] = budget.exact
            entry["runs"].append({"run_id": run.run_id, "available_examples": budget.available,
                                  "needed_examples": budget.needed, "epochs": round(budget.epochs, 4)})
        document.append(entry)
    if as_json:
        print(json.dumps(document, indent=2))
        return 0
    for entry in document:
        if "prepared" not in entry:
            print(f"{entry['source']}: files not found")
            continue
        state = "prepared" if entry["prepared"] else "not prepared (counts estimated from file sizes)"
        print(f"{entry['source']}: {state}")
        for run in entry["runs"]:
            if "needed_examples" in run:
                print(f"  run {run['run_id']}: needs {run['needed_examples']} of {run['available_examples']} "
                      f"training examples ({run['epochs']:.3g} epochs)")
    return 0
