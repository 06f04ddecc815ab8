"""The benchmark's own machinery: FLOP counting, the BENCHMARKS.md block, and a --quick run.

No timing is asserted anywhere: performance is judged by reading the benchmark's table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench/ is run from the repository root, not installed

from bench.run import BEGIN, END, write_block  # noqa: E402
from bench.timing import matmul_flops  # noqa: E402


def test_matmul_flops_counts_dots_in_nested_jaxprs() -> None:
    a, b = jnp.ones((3, 5)), jnp.ones((5, 7))
    assert matmul_flops(jnp.matmul, a, b) == 2 * 3 * 5 * 7
    # jit nesting and grad: forward dot plus the two backward dots of the same size
    loss = jax.jit(lambda x, y: jnp.sum(x @ y))
    assert matmul_flops(jax.grad(loss, argnums=(0, 1)), a, b) == 3 * 2 * 3 * 5 * 7

    def scanned(x: jax.Array) -> jax.Array:
        return jax.lax.scan(lambda carry, _: (carry @ jnp.ones((5, 5)), None), x, None, length=4)[0]

    assert matmul_flops(scanned, jnp.ones((3, 5))) == 4 * 2 * 3 * 5 * 5

    def branchy(x: jax.Array, flag: jax.Array) -> jax.Array:  # a cond counts its dearest branch once
        return jax.lax.cond(flag, lambda v: v @ jnp.ones((5, 9)), lambda v: jnp.zeros((3, 9)), x)

    assert matmul_flops(branchy, jnp.ones((3, 5)), True) == 2 * 3 * 5 * 9


def test_matmul_flops_counts_convolutions() -> None:
    images, kernel = jnp.ones((2, 8, 8, 3)), jnp.ones((4, 4, 3, 6))
    patches = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # 2 x 2 outputs per image, each output channel a 4 x 4 x 3 dot product
    assert matmul_flops(patches, images, kernel) == 2 * (2 * 2 * 2 * 6) * (4 * 4 * 3)


def test_write_block_replaces_only_the_generated_table(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\nintro\n\n{BEGIN}\nold table\n{END}\n\n## Analysis\nkept\n")
    write_block(path, "new table\n")
    assert path.read_text() == f"# Benchmarks\nintro\n\n{BEGIN}\nnew table\n{END}\n\n## Analysis\nkept\n"


def test_write_block_appends_markers_to_a_file_without_them(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\nhand-written\n")
    write_block(path, "table\n")
    assert path.read_text() == f"# Benchmarks\nhand-written\n\n{BEGIN}\ntable\n{END}\n"


def test_missing_output_directory_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path / "missing" / "B.md")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # minutes on 2 shared cores: every step of every family compiles
def test_quick_benchmark_runs_and_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = out.read_text()
    for section in ("| 1. engine / hand-written", "| 2. 87.5% unstructured", "| 2. 2:4", "| 3. vit",
                    "| 3. t5", "| 3. decoder", "| 4. sweep efficiency, first pass",
                    "| 4. sweep efficiency, second pass", "| 5. engine fit warm", "| 6. peak RSS",
                    "| 7. input pipeline"):
        assert section in written, section
    assert written.count(BEGIN) == written.count(END) == 1
