"""Train-step benchmarks: engine vs hand-written, masked sparse vs dense, mask updates, FLOP/s.

Every step here is built the way `engine run` builds it: a spec (experiments/*.yaml with
overrides) is planned by engine.planning.plan and turned into a RunSetup by engine.training.build; the step is
engine.training.loop.train_step jitted exactly as engine.training.loop.train_run jits it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from bench import reference_step
from bench.timing import interleaved_medians, matmul_flops, matmul_peak_flops
from engine.planning.plan import RunPlan, plan_experiment
from engine.sparsity import compute_masks, sparsified_tree
from engine.sparsity.masks import apply_masks
from engine.training.build import build_setup
from engine.training.loop import RunSetup, TrainState, initial_state, programs_for, train_step
from engine.training.parallel import replicate

REPO = Path(__file__).resolve().parents[1]
VIT_SPEC = REPO / "experiments" / "vit_sweep.yaml"
T5_SPEC = REPO / "experiments" / "t5_sweep.yaml"
PAPER_INTERVAL = 100  # the paper's mask update interval in steps (appendix A)


def plan_one(spec: Path, overrides: Sequence[str], working_dir: Path) -> RunPlan:
    """The single run a spec with these overrides plans (overrides must leave one sweep point)."""
    runs = plan_experiment(spec, list(overrides), working_dir)
    if len(runs) != 1:
        raise ValueError(f"{spec.name} {overrides}: expected one run, planned {len(runs)}")
    return runs[0]


def width_overrides(d_model: int, sparsity: float, steps: int, extra: Sequence[str] = ()) -> list[str]:
    """One run at a fixed width and sparsity, with the paper's 100-step mask interval."""
    return [f"sweep={{grid: {{model.d_model: [{d_model}]}}}}", f"sparsity.level={sparsity}",
            f"data.steps={steps}",
            f"sparsity.schedule={{kind: gmp, start: 0.25, end: 0.75, interval: {PAPER_INTERVAL}}}",
            *extra]


def device_batch(setup: RunSetup, step: int = 0) -> dict[str, jax.Array]:
    return jax.device_put(setup.data.batch(step))


def engine_step_fn(setup: RunSetup, donate: bool) -> Callable[[TrainState, Any], tuple[TrainState, jax.Array]]:
    """The engine's step with the run's schedules as arguments: train_run's own compiled step
    (donated state), or the same function jitted without donation (to call on one state again)."""
    schedules = replicate(setup.schedules, setup.layout)
    if donate:
        step = programs_for(setup).step
    else:
        step = jax.jit(lambda s, b, h: train_step(s, b, setup.loss_fn, setup.optimizer(h)))
    return lambda state, batch: step(state, batch, schedules)


class DonatingStepper:
    """Calls a state-donating step in a loop, carrying the state: what a training loop does."""

    def __init__(self, step: Callable[[Any, Any], tuple[Any, jax.Array]], state: Any, batch: Any) -> None:
        self.step, self.state, self.batch = step, state, batch

    def __call__(self) -> jax.Array:
        self.state, loss = self.step(self.state, self.batch)
        return loss


# --- 1. engine vs hand-written -------------------------------------------------------------------


@dataclass(frozen=True)
class EngineVsHandWritten:
    d_model: int
    engine_s: float
    hand_written_s: float
    max_param_difference: float  # after 3 steps from the same parameters: the same computation

    @property
    def ratio(self) -> float:
        return self.engine_s / self.hand_written_s


def hand_written_for(run: RunPlan, setup: RunSetup) -> tuple[Any, Any]:
    """The hand-written model + optimizer for this planned ViT run (its optimizer settings)."""
    spec = run.spec.optimizer
    rate = spec.learning_rate
    cooldown = round(rate.cooldown_fraction * run.steps)
    optimizer = reference_step.vit_adafactor(
        rate.peak, min(rate.warmup_steps, run.steps - cooldown), run.steps, cooldown,
        spec.grad_clip_norm, spec.decay_rate, spec.beta2_cap, spec.momentum, spec.eps)
    return reference_step.vit_from_dims(run.dims), optimizer


def engine_vs_hand_written(run: RunPlan, samples: int) -> EngineVsHandWritten:
    setup = build_setup(run)
    batch = device_batch(setup)
    model, optimizer = hand_written_for(run, setup)
    hand_step = reference_step.make_step(model, optimizer)
    engine_step = engine_step_fn(setup, donate=True)

    def fresh_states() -> tuple[TrainState, tuple]:
        state = initial_state(setup)
        params = reference_step.engine_params_to_hand_written(jax.tree.map(jnp.copy, state.params))
        return state, (params, optimizer.init(params))

    # Same parameters, same batch, 3 steps each: the two steps must agree (to float rounding).
    engine_state, hand_state = fresh_states()
    for _ in range(3):
        engine_state, _ = engine_step(engine_state, batch)
        hand_state, _ = hand_step(hand_state, batch)
    converted = reference_step.engine_params_to_hand_written(engine_state.params)
    difference = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                     zip(jax.tree.leaves(converted), jax.tree.leaves(hand_state[0]), strict=True))

    engine_state, hand_state = fresh_states()
    times = interleaved_medians(
        {"engine": DonatingStepper(engine_step, engine_state, batch),
         "hand": DonatingStepper(hand_step, hand_state, batch)},
        samples)
    return EngineVsHandWritten(run.d_model, times["engine"], times["hand"], difference)


# --- 2. masked sparse vs dense, mask updates -------------------------------------------------------


@dataclass(frozen=True)
class SparseVsDense:
    d_model: int
    dense_s: float
    hand_written_dense_s: float  # the same dense model without masks in its state (bench/reference_step.py)
    masked_s: dict[str, float]  # pattern label -> seconds per step between mask updates
    update_s: dict[str, float]  # pattern label -> seconds of a step that recomputes the masks

    def ratio(self, label: str) -> float:
        return self.masked_s[label] / self.dense_s

    def ratio_to_hand_written(self, label: str) -> float:
        return self.masked_s[label] / self.hand_written_dense_s

    def amortised_update_fraction(self, label: str) -> float:
        """Extra cost of one mask update spread over the paper's 100-step interval, as a fraction
        of the masked step."""
        return (self.update_s[label] - self.masked_s[label]) / PAPER_INTERVAL / self.masked_s[label]


def state_at(setup: RunSetup, count: int, sparsity: float, pattern: Any) -> TrainState:
    """A state whose pruning clock reads `count`, with params and masks at `sparsity` (what a run
    holds after its last mask update)."""
    state = initial_state(setup)
    opt_state = state.opt_state
    if sparsity > 0:
        sparsified = sparsified_tree(state.params, setup.dims)
        # jitted: op-by-op, the bisection of compute_masks takes seconds
        masks = jax.jit(lambda p: compute_masks(p, sparsified, sparsity, pattern))(state.params)
        state = state._replace(params=jax.jit(apply_masks)(state.params, masks))
        opt_state = opt_state._replace(masks=masks)
    opt_state = opt_state._replace(count=jnp.asarray(count, jnp.int32))
    return state._replace(step=jnp.asarray(count, jnp.int32), opt_state=opt_state)


def sparse_vs_dense(d_model: int, steps: int, working_dir: Path, samples: int) -> SparseVsDense:
    """Dense, 87.5% unstructured and 2:4 steps of the same dense ViT, between and on mask updates,
    and the hand-written dense step (no masks at all) of the same model.

    States are not donated here so one fixed state (clock between updates, or on an update step)
    is stepped again and again; all candidates pay the same output allocation."""
    from engine.sparsity import NM, Unstructured

    variants = {
        "dense": (0.0, [], Unstructured()),
        "87.5% unstructured": (0.875, [], Unstructured()),
        "2:4": (0.5, ["sparsity.pattern={kind: nm, n: 2, m: 4}"], NM(2, 4)),
    }
    between, on_update = round(0.5 * steps) + 1, round(0.5 * steps) // PAPER_INTERVAL * PAPER_INTERVAL
    candidates: dict[str, Callable[[], Any]] = {}
    batch = None
    for label, (sparsity, extra, pattern) in variants.items():
        run = plan_one(VIT_SPEC, width_overrides(d_model, sparsity, steps, extra), working_dir)
        setup = build_setup(run)
        batch = device_batch(setup) if batch is None else batch
        step = engine_step_fn(setup, donate=False)
        plain = state_at(setup, between, sparsity, pattern)
        candidates[label] = lambda step=step, plain=plain, batch=batch: step(plain, batch)[1]
        if sparsity == 0:
            model, optimizer = hand_written_for(run, setup)
            hand_step = reference_step.make_step(model, optimizer, donate=False)
            params = reference_step.engine_params_to_hand_written(initial_state(setup).params)
            hand_state = (params, optimizer.init(params))
            candidates["hand-written dense"] = lambda hand_step=hand_step, hand_state=hand_state, batch=batch: (
                hand_step(hand_state, batch)[1])
        else:
            update = state_at(setup, on_update, sparsity, pattern)
            candidates[label + " update"] = lambda step=step, update=update, batch=batch: step(update, batch)[1]
    times = interleaved_medians(candidates, samples)
    sparse_labels = [label for label in variants if label != "dense"]
    return SparseVsDense(d_model, times["dense"], times["hand-written dense"], {k: times[k] for k in sparse_labels},
                         {k: times[k + " update"] for k in sparse_labels})


# --- 3. FLOP/s against the matmul peak ------------------------------------------------------------


@dataclass(frozen=True)
class Utilisation:
    family: str
    d_model: int
    batch_size: int
    matmul_flops: float  # per step: forward, backward and optimizer dot products
    step_s: float
    peak_flops: float

    @property
    def achieved(self) -> float:
        return self.matmul_flops / self.step_s

    @property
    def fraction(self) -> float:
        return self.achieved / self.peak_flops


def family_runs(widths: dict[str, list[int]], working_dir: Path) -> list[RunPlan]:
    """Dense runs of each family at the given widths (decoder: t5_sweep with a decoder model)."""
    runs = []
    decoder_model = ("model={kind: decoder, base: {layers: 2, num_heads: 2, mlp_ratio: 4.0, "
                     "vocab_size: 128, seq_len: 64}, width_multiple: 2}")
    for family, family_widths in widths.items():
        spec = VIT_SPEC if family == "vit" else T5_SPEC
        # t5_sweep prunes the embeddings to a matched dense model's, a rule for t5 only
        extra = [decoder_model, "sparsity.targets=backbone"] if family == "decoder" else []
        runs += [plan_one(spec, width_overrides(width, 0.0, 600, extra), working_dir) for width in family_widths]
    return runs


def utilisation(runs: list[RunPlan], peak_size: int, samples: int, max_seconds: float) -> list[Utilisation]:
    peak = matmul_peak_flops(peak_size, samples)
    candidates, flops = {}, {}
    for index, run in enumerate(runs):
        setup = build_setup(run)
        batch = device_batch(setup)
        step = engine_step_fn(setup, donate=True)
        state = initial_state(setup)
        flops[index] = matmul_flops(lambda s, b, setup=setup: train_step(s, b, setup.loss_fn, setup.optimizer(setup.schedules)),
                                    state, batch)
        candidates[index] = DonatingStepper(step, state, batch)
    times = interleaved_medians(candidates, samples, max_seconds)
    return [Utilisation(run.family, run.d_model, run.batch_size, flops[i], times[i], peak)
            for i, run in enumerate(runs)]


def analytic_check(run: RunPlan) -> float:
    """6 x dense params x examples-or-tokens per step: the paper's FLOPs convention per step
    (3x for t5), to put next to the counted matmul FLOPs."""
    return run.flops_dense / run.steps

