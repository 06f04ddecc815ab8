"""Synthetic multi-label images: structured random images labelled by a fixed random teacher.

Images are sparse mixtures of a fixed bank of smooth random patterns (low-pass Gaussian fields,
so neighbouring pixels correlate like in photographs) plus white noise. Labels come from a fixed
random MLP over the whole image: logits are standardised per class, divided by the temperature,
and each label is drawn Bernoulli(sigmoid(logit)). The floor is therefore known exactly: the
Bernoulli entropy of the teacher's probabilities, summed over classes and averaged over images.

Why the teacher looks like this: a random ReLU/tanh network is mostly linear on Gaussian-like
inputs, so every student learns it at once and the loss curve is flat. The teacher's hidden
activation is cos (random Fourier features), whose expansion has no linear term, and its output
weights decay as a power law over hidden units, so there is a long tail of ever weaker, ever
harder features: bigger students fit more of them and more data reveals more of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageTask:
    """All fixed arrays of the task; `sample` turns a generator into a labelled batch."""

    patterns: np.ndarray  # [patterns, H*W*C] unit-RMS smooth fields, flattened
    active_patterns: int
    pixel_noise: float
    hidden: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weights, phases) per teacher layer
    readout: np.ndarray  # [width, classes]
    logit_shift: np.ndarray  # [classes] standardisation, folded in at construction
    logit_scale: np.ndarray  # [classes] 1 / (std * temperature)
    image_shape: tuple[int, int, int]

    def teacher_logits(self, flat_images: np.ndarray) -> np.ndarray:
        """Tempered logits [rows, classes] of the teacher on flattened images."""
        return (self._raw_logits(flat_images) - self.logit_shift) * self.logit_scale

    def _raw_logits(self, flat_images: np.ndarray) -> np.ndarray:
        activations = flat_images
        for weights, phases in self.hidden:
            activations = np.cos(activations @ weights + phases)
        return activations @ self.readout

    def images(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """[rows, H*W*C] float32: `active_patterns` random patterns with Gaussian weights + noise."""
        bank = len(self.patterns)
        chosen = rng.random((rows, bank)).argsort(axis=1)[:, : self.active_patterns]
        coefficients = np.zeros((rows, bank), dtype=np.float32)
        np.put_along_axis(
            coefficients, chosen, rng.standard_normal((rows, self.active_patterns)), axis=1
        )
        coefficients /= np.sqrt(self.active_patterns)  # unit pixel variance before noise
        noise = rng.standard_normal((rows, self.patterns.shape[1]), dtype=np.float32)
        return coefficients @ self.patterns + self.pixel_noise * noise

    def sample(self, rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """(images [rows, H, W, C] float32, multi-hot labels [rows, classes] float32)."""
        flat = self.images(rng, rows)
        probabilities = _sigmoid(self.teacher_logits(flat))
        labels = (rng.random(probabilities.shape) < probabilities).astype(np.float32)
        return flat.reshape((rows, *self.image_shape)), labels

    def reference_losses(self, rng: np.random.Generator, rows: int = 65536) -> dict[str, float]:
        """Monte Carlo sigmoid cross-entropy (summed over classes, as the ViT loss is) of:
        `floor`: the teacher's own probabilities (the irreducible loss);
        `trivial`: each class's marginal positive rate (the best input-blind predictor);
        `zero_logits`: an untrained head predicting 0.5 everywhere (classes x log 2)."""
        probabilities = _sigmoid(self.teacher_logits(self.images(rng, rows)).astype(np.float64))
        rate = probabilities.mean(axis=0)
        classes = probabilities.shape[1]
        return {
            "floor": float(_bernoulli_entropy(probabilities).sum(axis=1).mean()),
            "trivial": float(_bernoulli_entropy(rate).sum()),
            "zero_logits": float(classes * np.log(2.0)),
        }


    def teacher_loss(self, images: np.ndarray, labels: np.ndarray) -> float:
        """The loss the teacher itself scores on these labelled images (sigmoid cross-entropy of its
        own probabilities, summed over classes, averaged over images): the floor of this very set,
        which a model's loss on it can approach but not beat in expectation."""
        flat = images.reshape(len(images), -1)
        probabilities = np.clip(_sigmoid(self.teacher_logits(flat).astype(np.float64)), 1e-12, 1 - 1e-12)
        cross_entropy = -(labels * np.log(probabilities) + (1 - labels) * np.log1p(-probabilities))
        return float(cross_entropy.sum(axis=1).mean())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form never overflows


def _bernoulli_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def smooth_fields(
    rng: np.random.Generator, count: int, image_size: int, channels: int, smoothness: float
) -> np.ndarray:
    """[count, H*W*C] unit-RMS Gaussian random fields with power spectrum ~ 1/f^smoothness
    (periodic, via FFT); channels share structure through a random colour mixing."""
    frequencies = np.fft.fftfreq(image_size)
    radius = np.sqrt(frequencies[:, None] ** 2 + frequencies[None, :] ** 2)
    radius[0, 0] = 1.0 / image_size  # finite DC amplitude
    amplitude = radius ** (-smoothness / 2.0)
    white = rng.standard_normal((count, channels, image_size, image_size))
    fields = np.real(np.fft.ifft2(np.fft.fft2(white) * amplitude))
    colour = rng.standard_normal((channels, channels)) + 2.0 * np.eye(channels)
    fields = np.einsum("nchw,dc->nhwd", fields, colour).reshape(count, -1)
    fields -= fields.mean(axis=1, keepdims=True)
    fields /= np.sqrt((fields**2).mean(axis=1, keepdims=True))
    return fields.astype(np.float32)


def make_image_task(
    rng: np.random.Generator,
    image_size: int,
    channels: int,
    classes: int,
    teacher_width: int,
    teacher_layers: int,
    teacher_frequency: float,
    feature_decay: float,
    label_temperature: float,
    patterns: int,
    active_patterns: int,
    pixel_noise: float,
    smoothness: float,
    calibration_rows: int = 8192,
) -> ImageTask:
    """Draw the fixed bank and teacher, then standardise each class's logit on a calibration
    sample so `label_temperature` alone sets how sharp (and how noisy) the labels are."""
    pixels = image_size * image_size * channels
    bank = smooth_fields(rng, patterns, image_size, channels, smoothness)
    hidden = []
    fan_in = pixels
    for _ in range(teacher_layers):
        # Unit-variance inputs give pre-activations of std `teacher_frequency`: larger means a
        # more oscillating, harder teacher. Uniform phases make cos features zero-mean.
        weights = rng.standard_normal((fan_in, teacher_width)) * teacher_frequency / np.sqrt(fan_in)
        phases = rng.uniform(0.0, 2.0 * np.pi, teacher_width)
        hidden.append((weights.astype(np.float32), phases.astype(np.float32)))
        fan_in = teacher_width
    decay = np.arange(1, fan_in + 1) ** (-feature_decay)
    readout = (rng.standard_normal((fan_in, classes)) * decay[:, None]).astype(np.float32)
    draft = ImageTask(
        patterns=bank,
        active_patterns=min(active_patterns, patterns),
        pixel_noise=pixel_noise,
        hidden=tuple(hidden),
        readout=readout,
        logit_shift=np.zeros(classes, np.float32),
        logit_scale=np.ones(classes, np.float32),
        image_shape=(image_size, image_size, channels),
    )
    calibration = draft._raw_logits(draft.images(rng, calibration_rows))
    return ImageTask(
        **{
            **draft.__dict__,
            "logit_shift": calibration.mean(axis=0).astype(np.float32),
            "logit_scale": (1.0 / (calibration.std(axis=0) * label_temperature)).astype(np.float32),
        }
    )
