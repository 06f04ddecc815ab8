"""`engine run SPEC [--only FIELD=VALUE ...] [--set PATH=VALUE ...] [--retry-failed]`: arguments in,
a `Study` (engine/study/study.py) does the rest.

Trains every run of the spec that is not done (resuming partial ones from their last complete
checkpoint, skipping finished ones), then fits the law to the sweep's results and writes the
report into <output_dir>/<name>/report/. On SIGTERM (a preemption notice) the current run saves
a checkpoint at once and the command exits with code 75: run it again to resume.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from ruamel.yaml import YAML

from engine.errors import UserError
from engine.study.executors import EXECUTORS
from engine.study.study import Study, StudyOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="train what is missing, resume what was cut, then fit and report",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("spec", type=Path, metavar="SPEC", help="experiment spec file")
    parser.add_argument(
        "--only", action="append", default=[], metavar="FIELD=VALUE",
        help="train only the runs whose sweep coordinate FIELD equals VALUE, e.g. "
             "--only sparsity.level=0.5 (repeatable; all must match)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
        help="override a field before validation, e.g. --set data.batch_size=16 (repeatable)",
    )
    parser.add_argument("--retry-failed", action="store_true", help="train failed runs again")
    parser.add_argument("--no-report", action="store_true", help="train only; skip the fit and report")
    parser.add_argument(
        "--allow-drift", action="store_true",
        help="resume partial runs even when their stored spec.yaml or data files differ from now "
             "(default: refuse with the differences, see RELIABILITY.md)",
    )
    parser.add_argument(
        "--with-deps", action="store_true",
        help="first run the specs this one needs (pretrained sources, the fits its analyses use); "
             "without it, a missing dependency stops the command with what to run",
    )
    parser.add_argument(
        "--run-id", dest="run_ids", action="append", default=[], metavar="ID",
        help="train only this run (an id from `engine plan`; repeatable)",
    )
    parser.add_argument(
        "--executor", choices=EXECUTORS, default="local",
        help="where runs train: local (here, one after another), ray (one Ray task per run), "
             "slurm (a SLURM job array through submitit); see README 'Scaling out'",
    )
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="Ray cluster to use with --executor ray (default: RAY_ADDRESS, else a local one)")
    parser.add_argument(
        "--slurm-option", dest="slurm_options", action="append", default=[], metavar="KEY=VALUE",
        help="submitit parameter for --executor slurm, e.g. slurm_partition=gpu (repeatable)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.training.compile_cache import enable_persistent_compile_cache
    from engine.training.parallel import initialize_distributed

    initialize_distributed()  # a multi-host run joins its cluster before any other JAX call
    enable_persistent_compile_cache()  # runs of the same shapes reuse compiled steps
    options = StudyOptions(
        overrides=tuple(args.overrides), only=tuple(args.only), run_ids=tuple(args.run_ids),
        retry_failed=args.retry_failed, allow_drift=args.allow_drift, report=not args.no_report,
        with_deps=args.with_deps, executor=args.executor, ray_address=args.ray_address,
        slurm_options=slurm_options(args.slurm_options),
    )
    return Study(args.spec, options, Console(stderr=True)).run()


def slurm_options(pairs: list[str]) -> dict[str, object]:
    """--slurm-option KEY=VALUE pairs, values read as YAML scalars (60 is a number)."""
    options = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--slurm-option {pair}: expected KEY=VALUE", exit_code=2)
        options[key] = YAML(typ="safe").load(raw)
    return options
