"""Per-image comparison of a candidate with its baseline: plain functions on uint8 RGB.

SSIM is scikit-image's with the Wang et al. settings (gaussian weights, sigma 1.5, no
sample covariance, data_range 255), because that is the reference every published SSIM
number uses. SSIM normalises away luminance offsets, so it barely sees a uniform colour
cast; `color_shift` (largest per-channel mean difference, in uint8 levels) is in the
default gate for exactly that reason. Differences are computed in float64: OneDiff's old
script subtracted uint8 arrays and wrapped around.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from accelgate.metrics.catalog import PER_IMAGE


def _check_pair(candidate: np.ndarray, baseline: np.ndarray) -> None:
    for label, image in (("candidate", candidate), ("baseline", baseline)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{label} image must be uint8 HxWx3, got {image.dtype} {image.shape}")
    if candidate.shape != baseline.shape:
        raise ValueError(f"candidate is {candidate.shape[1]}x{candidate.shape[0]} but baseline is "
                         f"{baseline.shape[1]}x{baseline.shape[0]}: images of different sizes cannot be compared")


def ssim(candidate: np.ndarray, baseline: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    _check_pair(candidate, baseline)
    return float(structural_similarity(
        candidate, baseline, channel_axis=-1, data_range=255,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    ))


def psnr(candidate: np.ndarray, baseline: np.ndarray) -> float:
    """PSNR in dB; identical images give +inf (scikit-image's convention)."""
    _check_pair(candidate, baseline)
    mse = float(np.mean((candidate.astype(np.float64) - baseline.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def max_abs(candidate: np.ndarray, baseline: np.ndarray) -> float:
    _check_pair(candidate, baseline)
    return float(np.max(np.abs(candidate.astype(np.int16) - baseline.astype(np.int16))))


def color_shift(candidate: np.ndarray, baseline: np.ndarray) -> float:
    """Largest per-channel difference of mean intensity, in uint8 levels: a colour cast."""
    _check_pair(candidate, baseline)
    means = candidate.reshape(-1, 3).astype(np.float64).mean(0) - baseline.reshape(-1, 3).astype(np.float64).mean(0)
    return float(np.max(np.abs(means)))


FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "ssim": ssim, "psnr": psnr, "max_abs": max_abs, "color_shift": color_shift,
}


def compare_images(candidate: np.ndarray, baseline: np.ndarray) -> dict[str, float]:
    """Every per-image metric of the catalog (direction and defaults: `catalog.PER_IMAGE`)."""
    return {name: FUNCTIONS[name](candidate, baseline) for name in PER_IMAGE}


def diff_image(candidate: np.ndarray, baseline: np.ndarray, gain: float = 8.0) -> np.ndarray:
    """|candidate - baseline| amplified so a few levels of difference are visible."""
    _check_pair(candidate, baseline)
    diff = np.abs(candidate.astype(np.float64) - baseline.astype(np.float64)) * gain
    return np.clip(diff, 0, 255).astype(np.uint8)


def diff_heatmap(candidate: np.ndarray, baseline: np.ndarray, gain: float = 8.0,
                 colormap: str = "inferno") -> np.ndarray:
    """Where two images differ, as a heatmap a person reads at a glance: per pixel the largest
    channel difference, amplified by `gain` (a few levels become visible, 32 levels saturate)
    and mapped through a perceptual colormap (black: identical). Beside candidate and baseline
    in the report; a colour cast shows as an even glow, noise as speckle, a skipped step as
    structure."""
    from matplotlib import colormaps

    _check_pair(candidate, baseline)
    level = np.abs(candidate.astype(np.int16) - baseline.astype(np.int16)).max(axis=2) * gain
    lut = (colormaps[colormap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    return lut[np.clip(level, 0, 255).astype(np.uint8)]
