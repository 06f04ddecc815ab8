"""From a validated experiment to concrete run plans: sizes, data, FLOPs, identity and status.

This is what `engine plan` prints and what training consumes:

    from engine.planning.plan import plan_experiment
    for run in plan_experiment(Path("experiments/vit_sweep.yaml")):
        run.dims            # engine.planning.sizing.ModelDims: build the model from this
        run.spec.optimizer  # spec.optimizer.AdafactorOptimizer | AdamwOptimizer (learning_rate inside)
        run.spec.sparsity   # level, pattern, targets, schedule
        run.spec.data       # source, steps, batch_size, eval_every, on_exhausted
        build_source(run.spec.data.source.kind, source_settings(run.spec.data), run.dims,
                     run.batch_size, run.spec.data.source.seed, run.spec_dir, run.steps)
        run.run_dir         # <output_dir>/<name>/<run_id>/: status.json, checkpoints/, ...

Pure Python over engine.planning.sizing and engine.planning.costs: no JAX import, no tracing, fast for the paper's
112-run grid. Conventions (docs/science.md): N (`nonzeros`) counts the non-zero weights of
the sparsified layers only; D is examples for vit and tokens (seq_len per example) for t5 and
decoder; FLOPs are 6 N D, 3 N D for the t5 encoder-decoder (engine/planning/costs.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from engine.errors import UserError
from engine.planning import costs, sizing
from engine.planning.sizing import ModelDims
from engine.results import STATUS_FILE
from spec.data import DataSpec, ImageArrays, ImageRecords, TextFiles
from spec.experiment import ExperimentSpec
from spec.init import CheckpointSource, PretrainedInit, RunSource
from spec.loading import Experiment, load_experiment
from spec.model import PRESETS, DecoderModel, T5Model, VitModel
from spec.optimizer import LearningRate, WarmupConstantCooldownRate
from spec.sparsity import DenseSchedule, GmpSchedule, NmPattern, OneshotSchedule, SparsitySpec

RUN_ID_LENGTH = 12
CHECKPOINT_MANIFEST = "manifest.sha256.json"  # engine.training.checkpoint.MANIFEST, named here without importing JAX

ModelSpec = VitModel | T5Model | DecoderModel


@dataclass(frozen=True)
class RunStatus:
    """A run's state as found in its output directory: `new` (no directory or no status yet),
    `partial` (started: running now, or interrupted at `step`), `done`, or `failed` (`reason`)."""

    state: Literal["new", "partial", "done", "failed"]
    step: int | None = None
    reason: str | None = None

    def describe(self) -> str:
        if self.state == "partial":
            at = f" at step {self.step}" if self.step is not None else ""
            return f"partial{at}" + (f" ({self.reason})" if self.reason else "")
        if self.state == "failed":
            return f"failed ({self.reason})" if self.reason else "failed"
        return self.state


@dataclass(frozen=True)
class PretrainedSource:
    """Where an `init: pretrained` run's parameters come from, resolved when the run is planned:
    the checkpoint directory and step, and for a source run its id, length, D and status."""

    checkpoints: Path  # a checkpoints/ directory written by this engine
    step: int  # the saved step to load
    label: str  # for messages: "run 1a2b3c4d5e6f of vit_sweep.yaml" or the checkpoint path
    run_id: str | None = None  # kind: run
    spec_path: Path | None = None  # kind: run: the source's spec file, a dependency of this run
    steps: int | None = None  # the source's training steps (None for a bare checkpoint: `step`)
    data: int | None = None  # the source's D, Table 4's pretraining cost (None when unknown)
    status: RunStatus | None = None  # kind: run
    dims: ModelDims | None = None  # kind: run: the source's model shape

    def identity(self) -> dict[str, Any]:
        """What enters the pruned run's id: the source run and step, or for a bare checkpoint its
        step and the digest of its checksum manifest (the same contents wherever it lies)."""
        if self.run_id is not None:
            return {"run_id": self.run_id, "step": self.step}
        manifest = self.checkpoints / str(self.step) / CHECKPOINT_MANIFEST
        if manifest.is_file():
            return {"checkpoint_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(), "step": self.step}
        return {"checkpoint": self.checkpoints.resolve().as_posix(), "step": self.step}  # absent: where it should be

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "checkpoints": self.checkpoints.as_posix(), "step": self.step,
                "run_id": self.run_id, "steps": self.steps, "data": self.data,
                "status": None if self.status is None else asdict(self.status)}


@dataclass(frozen=True)
class RunPlan:
    """One concrete run of an experiment, everything about it known before any compute."""

    run_id: str  # content hash of the semantic run spec (see `run_id`)
    experiment: str  # the spec's name
    coordinates: dict[str, Any]  # sweep axis path -> value, as written in the spec
    spec: ExperimentSpec  # the concrete run spec (sweep point applied, no sweep left)
    spec_dir: Path  # relative paths in the spec (data files, other specs) resolve against this
    run_dir: Path  # <run.output_dir>/<name>/<run_id>, relative to the working directory
    dims: ModelDims  # the exact model shape, d_model resolved
    dense_params: int  # size of the sparsified weights, N / (1 - S)
    nonzeros: int  # N: non-zeros of the sparsified weights at the end of training
    total_params: int  # every parameter of the model (embeddings, norms, biases, head included)
    steps: int
    batch_size: int
    examples: int  # steps x batch_size
    data: int  # D: examples (vit) or tokens (t5, decoder)
    data_unit: Literal["examples", "tokens"]
    c_mul: float  # sparse-cost multiplier of the schedule (eq. 4 generalised)
    flops_dense: float  # k * dense_params * D: cost of training the dense base model
    flops_sparse: float  # k * nonzeros * D * c_mul: cost with sparsity exploited as it appears
    init: Literal["scratch", "pretrained"]
    status: RunStatus
    source: PretrainedSource | None = None  # init: pretrained only
    data_offset: int = 0  # a pruned run's data continues the source's stream: its step 0 is this step
    # targets backbone_and_matched_embeddings: the final sparsity of T5's token embedding and LM
    # head (engine.planning.sizing.matched_embedding_level); they are not counted in N.
    embedding_sparsity: float | None = None

    @property
    def d_model(self) -> int:
        return self.dims.d_model

    @property
    def sparsity(self) -> float:
        return level_of(self.spec.sparsity)

    @property
    def family(self) -> str:
        return self.dims.family

    @property
    def pattern(self) -> str:
        """'unstructured' or 'n:m' (for tables; the spec holds the typed pattern)."""
        pattern = self.spec.sparsity.pattern
        return f"{pattern.n}:{pattern.m}" if isinstance(pattern, NmPattern) else pattern.kind

    def loads_source(self, working_dir: Path = Path(".")) -> bool:
        """Whether starting this run reads its pretrained source: not done, and no checkpoint of
        its own yet (an interrupted run resumes from its own, never from its source again)."""
        if self.source is None or self.status.state == "done":
            return False
        own = working_dir / self.run_dir / "checkpoints"
        return not (own.is_dir() and any(p.name.isdigit() for p in own.iterdir()))

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "coordinates": self.coordinates,
            "family": self.family,
            "d_model": self.d_model,
            "sparsity": self.sparsity,
            "pattern": self.pattern,
            "dense_params": self.dense_params,
            "nonzeros": self.nonzeros,
            "total_params": self.total_params,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "examples": self.examples,
            "data": self.data,
            "data_unit": self.data_unit,
            "c_mul": self.c_mul,
            "flops_dense": self.flops_dense,
            "flops_sparse": self.flops_sparse,
            "init": self.init,
            "source": None if self.source is None else self.source.to_json(),
            "data_offset": self.data_offset,
            "embedding_sparsity": self.embedding_sparsity,
            "status": asdict(self.status),
            "run_dir": self.run_dir.as_posix(),
            "dims": asdict(self.dims),
            "spec": self.spec.model_dump(mode="json", exclude={"sweep"}),
        }


# --- model shape ---------------------------------------------------------------------------------


def base_fields(model: ModelSpec) -> dict[str, Any]:
    """The base shape: the preset's values overridden by the explicit `base` fields."""
    preset = getattr(model, "preset", None)
    return (PRESETS[preset] if preset else {}) | model.base.model_dump(exclude_none=True)


def model_dims(model: ModelSpec, sparsity: SparsitySpec) -> ModelDims:
    """The exact shape of a run's model: the base at the fixed d_model, or at the d_model whose
    non-zero count at the run's sparsity is closest to `nonzeros` (engine.planning.sizing.choose_d_model)."""
    fields = base_fields(model)
    mlp_ratio = fields.pop("mlp_ratio")
    # head_dim and mlp_dim are placeholders here: scaled_dims sets them from d_model.
    base = ModelDims(
        family=model.kind,
        d_model=1,
        head_dim=1,
        mlp_dim=1,
        sparsify_embeddings=sparsity.targets == "backbone_and_embeddings",
        **fields,
    )
    if model.d_model is not None:
        return sizing.scaled_dims(base, model.d_model, mlp_ratio)
    return _choose_d_model(base, mlp_ratio, model.nonzeros, sparsity.level, model.width_multiple)


@lru_cache(maxsize=4096)
def _choose_d_model(base: ModelDims, mlp_ratio: float, nonzeros: float, level: float, multiple: int) -> ModelDims:
    return sizing.choose_d_model(base, mlp_ratio, nonzeros, level, multiple)


# --- cost ----------------------------------------------------------------------------------------


def cost_multiplier(sparsity: SparsitySpec) -> float:
    """c_mul of eq. 4 for the run's schedule: gmp from start to end, oneshot as start == end ==
    at, and 1 for a dense run (or any run at level 0)."""
    schedule = sparsity.schedule
    if isinstance(schedule, DenseSchedule) or sparsity.level == 0:
        return 1.0
    if isinstance(schedule, GmpSchedule):
        return costs.c_mul(level_of(sparsity), schedule.start, schedule.end)
    assert isinstance(schedule, OneshotSchedule)
    return costs.c_mul(level_of(sparsity), schedule.at, schedule.at)


def gmp_steps(schedule: GmpSchedule, steps: int) -> tuple[int, int]:
    """GMP's start and end fractions as steps of a run of `steps` steps."""
    return round(schedule.start * steps), round(schedule.end * steps)


def schedule_problem(sparsity: SparsitySpec, steps: int) -> str | None:
    """Why a gmp schedule cannot reach its level in `steps` (the mask update that reaches it, the
    first interval multiple at or after `end`, must fall inside the run), or None."""
    schedule = sparsity.schedule
    if not isinstance(schedule, GmpSchedule) or sparsity.level == 0:
        return None
    start, end = gmp_steps(schedule, steps)
    last_update = -(-end // schedule.interval) * schedule.interval
    if end <= start or last_update >= steps:
        return (f"gmp pruning from step {start} to {end} every {schedule.interval} steps does not reach "
                f"sparsity {sparsity.level} within {steps} steps; use a smaller sparsity.schedule.interval "
                "or a longer run")
    return None


def cooldown_steps(rate: WarmupConstantCooldownRate, steps: int) -> int:
    """The cooldown's length in steps of a run of `steps` steps."""
    return round(rate.cooldown_fraction * steps)


def learning_rate_problem(rate: LearningRate, steps: int) -> str | None:
    """Why a learning-rate schedule cannot run as written in `steps` steps, or None: a warmup and
    a cooldown that together exceed the run would cut the warmup short and never hold the peak."""
    if not isinstance(rate, WarmupConstantCooldownRate):
        return None
    cooldown = cooldown_steps(rate, steps)
    if rate.warmup_steps + cooldown <= steps:
        return None
    return (f"warmup_steps {rate.warmup_steps} and a cooldown of {cooldown} steps (cooldown_fraction "
            f"{rate.cooldown_fraction:g}) exceed the run's {steps} steps; use fewer warmup_steps, a smaller "
            "cooldown_fraction or a longer run")


# --- data ----------------------------------------------------------------------------------------


def source_settings(data: DataSpec) -> dict[str, Any]:
    """The `settings` mapping engine.data.build_source takes for this data section (its `kind`
    and `seed` are passed separately): the source's fields (the tokenizer as its spec mapping,
    which build_source reads) and for file sources the exhaustion policy."""
    source = data.source
    settings = source.model_dump(exclude={"kind", "seed"}, exclude_none=True)
    if isinstance(source, (TextFiles, ImageArrays, ImageRecords)):
        settings["on_exhausted"] = data.on_exhausted
    return settings


# --- identity and status -------------------------------------------------------------------------


def run_id(spec: ExperimentSpec, dims: ModelDims, source: PretrainedSource | None = None) -> str:
    """Short sha256 of the canonical JSON of what a run computes: the resolved model shape, the
    sparsity, init, optimizer, data sections and the seed, and for a pretrained init the source
    run's id and step. Independent of key order, comments, defaults written out or not, presets vs
    the same values spelt out, the name, the sweep, the analysis and the run policy (output
    directory included)."""
    init = spec.init.model_dump(mode="json", exclude={"source"} if source is not None else None)
    if init["kind"] == "pretrained":
        init["load"] = "params"  # the removed init.load's one value: ids of existing pretrained runs stay the same
    semantic = {
        "model": asdict(dims),
        "sparsity": spec.sparsity.model_dump(mode="json"),
        # A resolved source stands for itself (below), however its spec path or `where` is spelt.
        "init": init,
        "optimizer": spec.optimizer.model_dump(mode="json"),
        "data": spec.data.model_dump(mode="json"),
        "seed": spec.seed,
    }
    if source is not None:
        semantic["source"] = source.identity()
    canonical = json.dumps(semantic, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:RUN_ID_LENGTH]


def read_status(run_dir: Path) -> RunStatus:
    """The status of a run directory: status.json is {"state": "running" | "done" | "failed",
    "step": int, "reason": str | null}; `running` reads as partial (live or interrupted)."""
    path = run_dir / STATUS_FILE
    if not path.exists():
        return RunStatus("new")
    try:
        raw = json.loads(path.read_text())
        state, step, reason = raw["state"], raw.get("step"), raw.get("reason")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return RunStatus("partial", None, f"unreadable {STATUS_FILE}: {error}")
    step = step if isinstance(step, int) and not isinstance(step, bool) else None
    if state == "done":
        return RunStatus("done", step)
    if state == "failed":
        return RunStatus("failed", step, str(reason) if reason is not None else None)
    if state == "running":  # live, or stopped: an interrupted run's reason says where
        return RunStatus("partial", step, str(reason) if reason else None)
    return RunStatus("partial", step, f"unknown state {state!r} in {STATUS_FILE}")


# --- planning ------------------------------------------------------------------------------------


def plan_run(
    spec: ExperimentSpec,
    coordinates: dict[str, Any],
    spec_dir: Path,
    working_dir: Path = Path("."),
    sources: SourcePlans | None = None,
) -> RunPlan:
    """The plan of one concrete run spec. `working_dir` is where `run.output_dir` is relative to
    (for reading status); the plan's run_dir stays relative to it. A pretrained init's source is
    resolved here (planning the source's spec through `sources`), and `init.budget_fraction`
    sets the run's length from the source's."""
    dims = model_dims(spec.model, spec.sparsity)
    source = None
    if isinstance(spec.init, PretrainedInit):
        sources = sources if sources is not None else SourcePlans(working_dir)
        source = resolve_source(spec.init, spec_dir, sources)
        check_same_shapes(dims, source)
        if spec.init.budget_fraction is not None:
            steps = budget_steps(spec.init.budget_fraction, source, spec.data.batch_size * _per_example(dims))
            spec = spec.model_copy(update={"data": spec.data.model_copy(update={"steps": steps})})
    if spec.data.flops is not None:
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"steps": flops_steps(spec, dims)})})
    identity = run_id(spec, dims, source)
    run_dir = Path(spec.run.output_dir) / spec.name / identity
    dense_params = sizing.sparsified_params(dims)
    nonzeros = sizing.nonzeros_at(dims, level_of(spec.sparsity))
    if spec.data.steps is None:  # validation requires steps, flops or budget_fraction; each has set it by now
        raise UserError(f"{spec.name}: data.steps is not set (give data.steps or data.flops)")
    steps = spec.data.steps
    examples = steps * spec.data.batch_size
    per_example = _per_example(dims)
    data = examples * per_example
    k = costs.flops_per_param_example(encoder_decoder=dims.family == "t5")
    c_mul = cost_multiplier(spec.sparsity)
    return RunPlan(
        run_id=identity,
        experiment=spec.name,
        coordinates=dict(coordinates),
        spec=spec,
        spec_dir=spec_dir,
        run_dir=run_dir,
        dims=dims,
        dense_params=dense_params,
        nonzeros=nonzeros,
        total_params=sizing.total_params(dims),
        steps=steps,
        batch_size=spec.data.batch_size,
        examples=examples,
        data=data,
        data_unit="examples" if per_example == 1 else "tokens",
        c_mul=c_mul,
        flops_dense=k * dense_params * data,
        flops_sparse=k * nonzeros * data * c_mul,
        init=spec.init.kind,
        status=read_status(working_dir / run_dir),
        source=source,
        data_offset=0 if source is None else continued_from(source, examples * per_example // steps),
        embedding_sparsity=embedding_sparsity(spec, dims),
    )


def embedding_sparsity(spec: ExperimentSpec, dims: ModelDims) -> float | None:
    """The matched embeddings' final level (targets backbone_and_matched_embeddings), else None."""
    if spec.sparsity.targets != "backbone_and_matched_embeddings":
        return None
    mlp_ratio = base_fields(spec.model)["mlp_ratio"]
    return sizing.matched_embedding_level(dims, level_of(spec.sparsity), mlp_ratio)


def plan_runs(
    experiment: Experiment, working_dir: Path = Path("."), sources: SourcePlans | None = None
) -> list[RunPlan]:
    """Plans of every sweep point, in sweep order. Two points that describe the same run (same
    run id) are an error: the sweep would train one run twice."""
    sources = sources if sources is not None else SourcePlans(Path(working_dir))
    sources.entering(experiment.path)
    try:
        plans = [
            plan_run(point.spec, point.coordinates, experiment.spec_dir, working_dir, sources)
            for point in experiment.points
        ]
    finally:
        sources.leaving(experiment.path)
    first_of: dict[str, RunPlan] = {}
    for plan in plans:
        if plan.run_id in first_of:
            raise UserError(
                f"{experiment.path}: sweep points {first_of[plan.run_id].coordinates} and {plan.coordinates} "
                f"are the same run (run id {plan.run_id})"
            )
        first_of[plan.run_id] = plan
    return plans


def plan_experiment(
    path: Path | str, overrides: Sequence[str] = (), working_dir: Path | str = "."
) -> list[RunPlan]:
    """Load, validate and plan a spec file. Raises spec.issues.SpecError for an invalid spec."""
    return plan_runs(load_experiment(Path(path), overrides), Path(working_dir))


# --- pretrained sources --------------------------------------------------------------------------


class SourcePlans:
    """The plans of the specs that pretrained inits name, each planned once per command, with a
    guard against specs that name each other as sources."""

    def __init__(self, working_dir: Path) -> None:
        self.working_dir = working_dir
        self._plans: dict[Path, list[RunPlan]] = {}
        self._open: list[Path] = []

    def entering(self, path: Path) -> None:
        key = path.resolve()
        if key in self._open:
            chain = " -> ".join(p.name for p in [*self._open, key])
            raise UserError(f"init.source: specs name each other as pretrained sources ({chain})")
        self._open.append(key)

    def leaving(self, path: Path) -> None:
        self._open.remove(path.resolve())

    def plans(self, path: Path) -> list[RunPlan]:
        key = path.resolve()
        if key not in self._plans:
            if not path.is_file():
                raise UserError(f"init.source.spec: {path} does not exist")
            self._plans[key] = plan_runs(load_experiment(path), self.working_dir, self)
        return self._plans[key]


def resolve_source(init: PretrainedInit, spec_dir: Path, sources: SourcePlans) -> PretrainedSource:
    """The checkpoint an `init: pretrained` names. A source run is picked from its spec's plans by
    `where` (dotted field paths of the run's resolved spec, or its sweep coordinates)."""
    source = init.source
    if isinstance(source, CheckpointSource):
        path = spec_dir / source.path
        return PretrainedSource(checkpoints=path, step=source.step, label=f"checkpoint {path} step {source.step}")
    assert isinstance(source, RunSource)
    spec_path = spec_dir / source.spec
    candidates = sources.plans(spec_path)
    matches = [plan for plan in candidates if _matches(plan, source.where, spec_path)]
    if len(matches) != 1:
        shown = json.dumps(source.where, separators=(", ", ": "))
        if not matches:
            raise UserError(f"init.source.where {shown} matches no run of {spec_path} "
                            f"({len(candidates)} runs; `engine plan {spec_path}` lists them)")
        raise UserError(f"init.source.where {shown} matches {len(matches)} runs of {spec_path} "
                        f"({', '.join(p.run_id for p in matches)}); add fields that pick one")
    picked = matches[0]
    return PretrainedSource(
        checkpoints=sources.working_dir / picked.run_dir / "checkpoints",
        step=picked.steps,
        label=f"run {picked.run_id} of {spec_path}",
        run_id=picked.run_id,
        spec_path=spec_path,
        steps=picked.steps,
        data=picked.data,
        status=picked.status,
        dims=picked.dims,
    )


def _matches(plan: RunPlan, where: dict[str, Any], spec_path: Path) -> bool:
    resolved = plan.spec.model_dump(mode="json")
    for path, wanted in where.items():
        if path in plan.coordinates:
            value = plan.coordinates[path]
        else:
            value = resolved
            for part in path.split("."):
                if not isinstance(value, dict) or part not in value:
                    raise UserError(f"init.source.where: {path} is not a field of {spec_path}'s runs")
                value = value[part]
        if value != wanted:
            return False
    return True


def check_same_shapes(dims: ModelDims, source: PretrainedSource) -> None:
    """A source run must have exactly this run's parameter shapes (checked again against the
    checkpoint itself when the parameters are loaded)."""
    if source.dims is None:
        return
    ours, theirs = sizing.param_shapes(dims), sizing.param_shapes(source.dims)
    for name in sorted(ours.keys() | theirs.keys()):
        if ours.get(name) != theirs.get(name):
            raise UserError(
                f"init.source: parameter {name} is {_shape(theirs.get(name))} in {source.label} but "
                f"{_shape(ours.get(name))} in this model (d_model {source.dims.d_model} there, {dims.d_model} "
                "here): a pretrained run must have its source's model"
            )


def level_of(sparsity: SparsitySpec) -> float:
    """The sparsity level of a concrete run (set by the spec or its sweep; validation requires it)."""
    if sparsity.level is None:
        raise UserError("sparsity.level is not set (set it, or sweep it)")
    return sparsity.level


def flops_steps(spec: ExperimentSpec, dims: ModelDims) -> int:
    """data.flops as steps: C = k N D c_mul(S) solved for D, in whole steps (at least one)."""
    k = costs.flops_per_param_example(encoder_decoder=dims.family == "t5")
    per_step = k * sizing.nonzeros_at(dims, level_of(spec.sparsity)) * cost_multiplier(spec.sparsity)
    per_step *= spec.data.batch_size * _per_example(dims)
    assert spec.data.flops is not None  # called only for a run budgeted in FLOPs
    return max(1, round(spec.data.flops / per_step))


def budget_steps(fraction: float, source: PretrainedSource, data_per_step: int) -> int:
    """init.budget_fraction as steps: a fraction of the source's D (the paper's 5.6% of the
    pretraining budget), so a different batch size still gives that share of the data. A bare
    checkpoint's D is unknown: then a fraction of its steps."""
    if source.data is not None:
        return max(1, round(fraction * source.data / data_per_step))
    return max(1, round(fraction * (source.steps or source.step)))


def continued_from(source: PretrainedSource, data_per_step: int) -> int:
    """The data step a pruned run starts at: past everything its source trained on (the paper
    prunes on fresh data; a file source would otherwise repeat its first batches)."""
    if source.data is not None:
        return -(-source.data // data_per_step)  # ceil: never reuse a partly seen batch
    return source.step


def _per_example(dims: ModelDims) -> int:
    """D per example: tokens for language models, 1 image for vit (docs/science.md)."""
    return dims.seq_len if dims.family in ("t5", "decoder") else 1


def _shape(shape: tuple[int, ...] | None) -> str:
    return "absent" if shape is None else "x".join(map(str, shape))


def totals(plans: Sequence[RunPlan]) -> dict[str, Any]:
    """Run counts by state and the summed FLOPs."""
    states = {state: 0 for state in ("new", "partial", "done", "failed")}
    for plan in plans:
        states[plan.status.state] += 1
    return {
        "runs": len(plans),
        **states,
        "flops_dense": sum(plan.flops_dense for plan in plans),
        "flops_sparse": sum(plan.flops_sparse for plan in plans),
    }
