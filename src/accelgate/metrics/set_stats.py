"""Set-level statistics: FID, KID and Inception Score, on features extracted once per set.

The statistics run on CPU in float64 (features come from `accelgate.metrics.features`):
they are cheap next to extraction, and float32 covariance sums lose digits at 30k.

FID and KID are torchmetrics' own classes, fed the features through a pass-through
`feature=` module, so the statistics are exactly torchmetrics'. IS is torch-fidelity's
`isc_features_to_metric`: its protocol (seeded numpy permutation, split bounds i*N//splits,
population std) is the reference one; torchmetrics' class reshuffles with the global torch
RNG and reports an unbiased std, so its value moves from run to run.

What is rejected, and what is only flagged:
- FID: fewer than 2 images in a set is an error (no covariance). Fewer images than feature
  dimensions (2048 for Inception) gives a rank-deficient covariance: FID is then biased
  upward and only comparable with FID at the same N, so the result carries a note and
  `comparable_to_published=False`, but a value is returned (candidate-vs-reference at equal
  N is still a valid relative comparison).
- KID: `subset_size` above either set's size is an error (torchmetrics' check), and so is a
  subset below 2 (the unbiased MMD divides by m(m-1)). The default subset is min(1000, N).
- IS: fewer than 2 images per split is an error (a split of one image scores exactly 1).
- Non-finite features are errors.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from accelgate.metrics.features import ImageFeatureExtractor, ImageFeatures, InsufficientSamples, real_image_batches


# ---------------------------------------------------------------- statistics
@dataclass
class DistributionResult:
    metric: str
    value: float
    std: float | None  # over KID subsets / IS splits
    n_candidate: int
    n_reference: int | None
    extractor: str
    note: str = ""
    comparable_to_published: bool = True

    def describe(self) -> str:
        spread = f" +/- {self.std:.4g}" if self.std is not None else ""
        ref = f" vs {self.n_reference}" if self.n_reference is not None else ""
        return f"{self.metric} {self.value:.4g}{spread} (N={self.n_candidate}{ref}; {self.extractor})" + (
            f" [{self.note}]" if self.note else "")


class _PassThrough(nn.Module):
    """Lets torchmetrics' FID/KID classes take precomputed features as their 'images'."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


def _pool(x, what: str) -> tuple[torch.Tensor, str]:
    if isinstance(x, ImageFeatures):
        return x.pool, x.extractor
    t = torch.as_tensor(x, dtype=torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{what}: expected features [N, D], got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what}: non-finite features")
    return t, "given features"


def fid(candidate, reference, what: str = "candidate vs reference") -> DistributionResult:
    """Fréchet distance between two feature sets (torchmetrics' FrechetInceptionDistance)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    cand, label = _pool(candidate, "candidate")
    ref, _ = _pool(reference, "reference")
    if cand.shape[1] != ref.shape[1]:
        raise ValueError(f"FID {what}: feature dims differ ({cand.shape[1]} vs {ref.shape[1]})")
    for name, t in (("candidate", cand), ("reference", ref)):
        if t.shape[0] < 2:
            raise InsufficientSamples(f"FID {what}: the {name} set has {t.shape[0]} image(s); a covariance needs "
                                      "at least 2, and FID is only stable with thousands")
    dim = cand.shape[1]
    metric = FrechetInceptionDistance(feature=_PassThrough(dim))
    metric.update(ref, real=True)
    metric.update(cand, real=False)
    value = float(metric.compute())
    if not np.isfinite(value):
        raise ValueError(f"FID {what}: the Fréchet distance is not finite ({value}); the covariances are degenerate")
    note, published = "", True
    small = min(cand.shape[0], ref.shape[0])
    if small < dim:
        note = (f"N={small} < {dim} feature dims: rank-deficient covariance, FID biased upward; "
                "compare only with FID at the same N")
        published = False
        warnings.warn(f"FID {what}: {note}", stacklevel=2)
    return DistributionResult("FID", value, None, cand.shape[0], ref.shape[0], label, note, published)


def kid(candidate, reference, subset_size: int | None = None, subsets: int = 100, seed: int = 0,
        what: str = "candidate vs reference") -> DistributionResult:
    """Kernel Inception Distance (torchmetrics' class; subsets drawn from a seeded torch RNG)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    cand, label = _pool(candidate, "candidate")
    ref, _ = _pool(reference, "reference")
    smallest = min(cand.shape[0], ref.shape[0])
    size = min(1000, smallest) if subset_size is None else int(subset_size)
    if size > smallest:
        raise InsufficientSamples(
            f"KID {what}: subset_size={size} exceeds the smaller set (candidate {cand.shape[0]}, reference "
            f"{ref.shape[0]} images); use subset_size <= {smallest} or generate more images")
    if size < 2:
        raise InsufficientSamples(f"KID {what}: subset_size={size}; the unbiased MMD needs at least 2 images per "
                                  f"subset (sets have {cand.shape[0]} and {ref.shape[0]})")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=_PassThrough(cand.shape[1]), subsets=subsets, subset_size=size)
    metric.update(ref, real=True)
    metric.update(cand, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    note = f"subset_size={size}, subsets={subsets}"
    return DistributionResult("KID", float(mean), float(std), cand.shape[0], ref.shape[0], label, note)


def inception_score(logits, splits: int = 10, seed: int = 2020, shuffle: bool = True) -> DistributionResult:
    """Inception Score from unbiased logits, by torch-fidelity's `isc_features_to_metric`."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    label = "given logits"
    if isinstance(logits, ImageFeatures):
        if logits.logits is None:
            raise ValueError(f"inception_score: {logits.extractor} gives no class logits")
        label, logits = logits.extractor, logits.logits
    t = torch.as_tensor(logits, dtype=torch.float64)
    if t.ndim != 2 or not torch.isfinite(t).all():
        raise ValueError(f"inception_score: expected finite logits [N, classes], got shape {tuple(t.shape)}")
    if t.shape[0] < 2 * splits:
        raise InsufficientSamples(
            f"Inception Score: {t.shape[0]} images for {splits} splits; each split needs at least 2 images "
            f"(one image scores exactly 1). Use splits <= {max(1, t.shape[0] // 2)} or more images")
    out = isc_features_to_metric(t, splits=splits, shuffle=shuffle, rng_seed=seed)
    note = f"splits={splits}" + (f"; N={t.shape[0]} is small, IS is noisy and biased low" if t.shape[0] < 5000 else "")
    return DistributionResult("IS", out["inception_score_mean"], out["inception_score_std"], t.shape[0], None,
                              label, note, t.shape[0] >= 5000)


def fid_vs_real(extractor: ImageFeatureExtractor, candidate: ImageFeatures, real_source, *, limit: int | None = None,
                real_features: ImageFeatures | None = None) -> tuple[DistributionResult, ImageFeatures]:
    """FID of a candidate set against a real image folder; returns the real features to reuse."""
    if real_features is None:
        size = candidate.image_size[0]
        real_features = extractor.extract_batches(real_image_batches(real_source, size, limit=limit), "real images")
    return fid(candidate, real_features, what="candidate vs real images"), real_features
