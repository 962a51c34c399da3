"""Instruments for measuring the test bed: perturb the denoiser, count what a cache skipped.

Why in the package: the benchmark uses them now, and the damage backends and calibration of
later issues need the same two things: a relative perturbation of the denoiser output at
chosen steps (the test bed's noise floor), and a count of the denoiser's attention and
resnet calls, so a cache that skips nothing is reported as a silent no-op rather than as
a lossless acceleration.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from accelgate.backends.torch_backends import denoiser_of


def denoiser(pipe) -> torch.nn.Module:
    """The pipeline's unet or transformer (the module the backends act on)."""
    return denoiser_of(pipe)[1]


def _sample(output):
    return output[0] if isinstance(output, tuple) else output.sample


def _replace(output, new: torch.Tensor):
    if isinstance(output, tuple):
        return (new, *output[1:])
    output.sample = new
    return output


@contextlib.contextmanager
def perturbed_output(pipe, relative: float, steps: set[int] | None = None, seed: int = 0) -> Iterator[dict]:
    """Add Gaussian noise of std `relative` x std(output) to the denoiser's output.

    `steps`: the denoiser call indices (0-based, one call per step with batched CFG) to
    perturb; None perturbs every call. The noise comes from its own seeded generator, so a
    perturbed run is reproducible and the pipeline's generator is untouched.
    """
    state = {"calls": 0}
    gen = torch.Generator().manual_seed(seed)

    def hook(module, args, output):
        index = state["calls"]
        state["calls"] += 1
        if steps is not None and index not in steps:
            return output
        sample = _sample(output)
        noise = torch.randn(sample.shape, generator=gen).to(sample.device, sample.dtype)
        return _replace(output, sample + relative * sample.float().std().to(sample.dtype) * noise)

    handle = denoiser(pipe).register_forward_hook(hook)
    try:
        yield state
    finally:
        handle.remove()


@dataclass
class CallCounter:
    """Counts attention-processor invocations and resnet forwards inside the denoiser."""

    attention: int = 0
    resnets: int = 0
    denoiser_calls: int = 0
    _handles: list = field(default_factory=list)
    _processors: list = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.attention + self.resnets


class _CountingProcessor:
    def __init__(self, inner, counter: CallCounter):
        self.inner, self.counter = inner, counter

    def __call__(self, *args, **kwargs):
        self.counter.attention += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@contextlib.contextmanager
def counting_calls(pipe) -> Iterator[CallCounter]:
    """Count work the denoiser really does: a skipped block calls neither its attention
    processors nor its resnets. Installed after the backend, removed afterwards."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    counter = CallCounter()
    den = denoiser(pipe)
    originals = []
    for module in den.modules():
        if isinstance(module, Attention):
            originals.append((module, module.processor))
            module.processor = _CountingProcessor(module.processor, counter)
        elif isinstance(module, ResnetBlock2D):
            counter._handles.append(module.register_forward_pre_hook(
                lambda *_: setattr(counter, "resnets", counter.resnets + 1)))
    counter._handles.append(den.register_forward_pre_hook(
        lambda *_: setattr(counter, "denoiser_calls", counter.denoiser_calls + 1)))
    try:
        yield counter
    finally:
        for handle in counter._handles:
            handle.remove()
        for module, processor in originals:
            module.processor = processor


def float_levels(images) -> np.ndarray:
    """Pipeline float output ([0, 1], NHWC) in uint8 levels, not rounded: small moves stay visible."""
    return np.asarray(images, dtype=np.float64) * 255.0


def to_uint8(images) -> np.ndarray:
    return (np.clip(np.asarray(images, dtype=np.float64), 0, 1) * 255).round().astype(np.uint8)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image SSIM with the suite's settings (Wang et al., gaussian, data range 255)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def move(reference, candidate) -> dict[str, float]:
    """How far `candidate` images moved from `reference` (float pipeline outputs, NHWC)."""
    ref, cand = float_levels(reference), float_levels(candidate)
    ref8, cand8 = to_uint8(reference), to_uint8(candidate)
    return {
        "mean_abs": float(np.abs(ref - cand).mean()),  # float levels: sees moves below one level
        "max_abs_uint8": int(np.abs(ref8.astype(int) - cand8.astype(int)).max()),
        "ssim_min": min(ssim(a, b) for a, b in zip(ref8, cand8)),
    }
