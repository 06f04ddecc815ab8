"""7. The input pipeline: batches/s the prepared-cache loader delivers against the steps/s the
compiled train step consumes, on the default sweeps' shapes (their first run's model).

Data is generated here (pseudo-English text files, PNG records), prepared into a private cache,
and read exactly as training reads it: `source.batches`, Grain's prefetch threads, the keyed
shuffle. The step is timed alone on a fixed batch (the median of many), so the ratio says how
many times faster than the step the loader is; >= 10 means the device never waits on data.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from bench.bench_train import T5_SPEC, VIT_SPEC, DonatingStepper, device_batch, engine_step_fn, plan_one
from bench.timing import interleaved_medians
from engine.data.base import step_batches
from engine.training.build import build_setup
from engine.training.loop import place_initial_state, programs_for
from engine.training.parallel import replicate

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no will can more about out up what "
         "model sparse scaling data training loss weights steps tokens layer width").split()


def generated_text(directory: Path, files: int, bytes_per_file: int, seed: int = 0) -> list[Path]:
    """Files of pseudo-English lines (random words from a fixed list), written in 1 MiB pieces."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocabulary = np.array(WORDS)
    paths = []
    for index in range(files):
        path = directory / f"part-{index:03d}.txt"
        with open(path, "w") as handle:
            written = 0
            while written < bytes_per_file:
                words = vocabulary[rng.integers(0, len(vocabulary), size=200_000)]
                lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
                text = "\n".join(lines)[: max(0, bytes_per_file - written)] + "\n"
                handle.write(text)
                written += len(text)
        paths.append(path)
    return paths


def generated_png_records(directory: Path, count: int, image_size: int, classes: int, seed: int = 0) -> Path:
    """One Parquet file of encoded PNG images with class ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    encoded = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=(image_size, image_size, 3), dtype=np.uint8)).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    path = directory / "images.parquet"
    pq.write_table(pa.table({"image": encoded, "label": rng.integers(0, classes, size=count).tolist()}), path)
    return path


@dataclass(frozen=True)
class InputRate:
    source: str
    family: str
    d_model: int
    batch_size: int
    batches_per_s: float  # the loader alone, prefetch threads on
    step_s: float  # median compiled step

    @property
    def ratio(self) -> float:
        return self.batches_per_s * self.step_s


def input_rate(spec: Path, overrides: list[str], batches: int, samples: int, working_dir: Path) -> InputRate:
    run = plan_one(spec, overrides, working_dir)
    setup = build_setup(run)  # prepares the cache (not timed)
    iterator = step_batches(setup.data, 0, batches + 1)
    next(iterator)  # threads started, first batch in
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    batches_per_s = batches / (time.perf_counter() - started)
    state = place_initial_state(setup, programs_for(setup), replicate(setup.schedules, setup.layout))
    stepper = DonatingStepper(engine_step_fn(setup, donate=True), state, device_batch(setup))
    step_s = interleaved_medians({"step": stepper}, samples)["step"]
    jax.block_until_ready(stepper.state)
    return InputRate(run.spec.data.source.kind, run.dims.family, run.dims.d_model, run.batch_size, batches_per_s, step_s)


def generated_image_arrays(directory: Path, count: int, image_size: int, classes: int, seed: int = 0) -> None:
    """images.npy (uint8) and labels.npy (class ids): the memory-mapped image_arrays source."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    np.save(directory / "images.npy", rng.integers(0, 256, size=(count, image_size, image_size, 3), dtype=np.uint8))
    np.save(directory / "labels.npy", rng.integers(0, classes, size=count))


def default_shape_rates(work: Path, batches: int, samples: int) -> list[InputRate]:
    """The first run of vit_sweep (PNG records, then .npy arrays), t5_sweep and its decoder
    variant (text files). `batches` must stay within the 150 steps the runs are planned for."""
    text = work / "text"
    generated_text(text, files=4, bytes_per_file=2_000_000)
    generated_png_records(work / "images", count=6000, image_size=8, classes=16)
    generated_image_arrays(work / "arrays", count=6000, image_size=8, classes=16)
    # The sweeps' first run: the smallest model (the fastest step, the hardest case for the loader).
    first = ["sweep={grid: {model.nonzeros: [5000]}}", "sparsity.level=0.5", "data.steps=150", "data.batch_size=32"]
    text_source = f"data.source={{kind: text_files, paths: [{text}], tokenizer: {{kind: bytes}}}}"
    decoder = ("model={kind: decoder, base: {layers: 2, num_heads: 2, mlp_ratio: 4.0, vocab_size: 259, "
               "seq_len: 64}, width_multiple: 2}")
    return [
        input_rate(VIT_SPEC, [*first, f"data.source={{kind: image_records, paths: [{work / 'images'}]}}"],
                   batches, samples, work),
        input_rate(VIT_SPEC, [*first, f"data.source={{kind: image_arrays, paths: [{work / 'arrays' / 'images.npy'}, "
                                      f"{work / 'arrays' / 'labels.npy'}]}}"], batches, samples, work),
        input_rate(T5_SPEC, [*first, "model.base.vocab_size=300", text_source], batches, samples, work),
        input_rate(T5_SPEC, [*first, decoder, "sparsity.targets=backbone", text_source], batches, samples, work),
    ]
