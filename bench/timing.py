"""Measuring on a shared machine: interleaved medians, the matmul peak, matmul FLOPs, memory.

Other engineers load this 2-core machine, so absolute times drift. Every comparison here times its
candidates in alternation (A, B, A, B, ...) after a warm-up and reports medians, so a burst of
outside load hits both sides alike and the *ratio* stays meaningful.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core


def interleaved_medians(
    candidates: dict[str, Callable[[], Any]], samples: int, max_seconds: float = float("inf")
) -> dict[str, float]:
    """Median seconds per call of each candidate, the candidates called in turn (A, B, A, B, ...),
    each call blocked on and timed alone. Fine-grained alternation spreads bursts of outside load
    evenly over the candidates; the median drops the calls a burst hit.

    Each candidate is called once first (compilation, first-touch allocation) outside the timing.
    Stops early after `max_seconds` of timing (slow candidates), but not before 5 rounds."""
    for run in candidates.values():
        jax.block_until_ready(run())
    times: dict[str, list[float]] = {name: [] for name in candidates}
    deadline = time.perf_counter() + max_seconds
    for round_ in range(samples):
        if round_ >= 5 and time.perf_counter() > deadline:
            break
        for name, run in candidates.items():
            started = time.perf_counter()
            jax.block_until_ready(run())
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def matmul_peak_flops(size: int, samples: int, max_seconds: float = 15.0) -> float:
    """FLOP/s of a large jitted float32 matmul (size x size) @ (size x size): the machine's
    practical peak for the dense linear algebra a training step is made of (median of samples)."""
    keys = jax.random.split(jax.random.key(0))
    a = jax.random.normal(keys[0], (size, size), jnp.float32)
    b = jax.random.normal(keys[1], (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    seconds = interleaved_medians({"matmul": lambda: matmul(a, b)}, samples, max_seconds)["matmul"]
    return 2.0 * size**3 / seconds


def _dot_flops(equation: jax_core.JaxprEqn) -> float:
    """2 x (output elements) x (contracted length) of one dot_general."""
    (lhs_contract, _), _ = equation.params["dimension_numbers"]
    lhs = equation.invars[0].aval.shape
    out = equation.outvars[0].aval.shape
    return 2.0 * math.prod(out) * math.prod(lhs[axis] for axis in lhs_contract)


def _conv_flops(equation: jax_core.JaxprEqn) -> float:
    """2 x (output elements) x (kernel elements per output channel)."""
    kernel = equation.invars[1].aval.shape
    out = equation.outvars[0].aval.shape
    spec = equation.params["dimension_numbers"]
    out_features = kernel[spec.rhs_spec[0]]
    return 2.0 * math.prod(out) * math.prod(kernel) / out_features


def _sub_jaxprs(equation: jax_core.JaxprEqn) -> list[tuple[jax_core.Jaxpr, float]]:
    """Jaxprs nested in an equation's params, each with how often it runs per call (a cond's
    branches: the most expensive one counts once; a scan's body: `length` times)."""
    found = []
    for value in equation.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax_core.ClosedJaxpr):
                found.append(item.jaxpr)
            elif isinstance(item, jax_core.Jaxpr):
                found.append(item)
    times = float(equation.params.get("length", 1)) if equation.primitive.name == "scan" else 1.0
    return [(jaxpr, times) for jaxpr in found]


def jaxpr_matmul_flops(jaxpr: jax_core.Jaxpr) -> float:
    """Model FLOPs: every dot_general and convolution in the traced computation (forward, backward
    and optimizer alike), walking nested jaxprs. Elementwise work is not counted."""
    total = 0.0
    for equation in jaxpr.eqns:
        name = equation.primitive.name
        if name == "dot_general":
            total += _dot_flops(equation)
        elif name == "conv_general_dilated":
            total += _conv_flops(equation)
        elif name == "cond":
            total += max(jaxpr_matmul_flops(branch.jaxpr) for branch in equation.params["branches"])
        else:
            total += sum(times * jaxpr_matmul_flops(sub) for sub, times in _sub_jaxprs(equation))
    return total


def matmul_flops(function: Callable[..., Any], *args: Any) -> float:
    """Matmul FLOPs of one call of `function(*args)`, counted on its jaxpr."""
    return jaxpr_matmul_flops(jax.make_jaxpr(function)(*args).jaxpr)


def rss_bytes() -> tuple[int, int]:
    """(current, peak since the last reset) resident memory of this process, from /proc."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def load_average() -> float:
    """1-minute load average (other engineers share the cores)."""
    return os.getloadavg()[0]
