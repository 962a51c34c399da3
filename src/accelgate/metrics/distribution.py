"""Set-level metrics: FID, KID and Inception Score, on features extracted once per image set.

Why features first: the gate compares one candidate set against the reference backend's set
and, when given, a real image set (COCO-30k val). Extracting each set's Inception features
once, batched on the device, and computing every statistic from them costs one forward pass
per image instead of one per metric per comparison. The statistics themselves run on CPU in
float64: they are cheap next to extraction, and float32 covariance sums lose digits at 30k.

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
- Mixed image sizes in a set, non-finite pixels and non-finite features are errors.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from accelgate.metrics.weights import MetricWeightsCorrupt, load_checkpoint, resolve_file


class InsufficientSamples(ValueError):
    """Too few images for the statistic to mean anything."""


# ---------------------------------------------------------------- images in, uint8 NCHW out
def as_uint8_nchw(images, what: str = "images") -> torch.Tensor:
    """One uint8 tensor [N, 3, H, W] on CPU from PIL images, arrays or tensors.

    Floats must be in [0, 1] (diffusers' `output_type="np"/"pt"`) and are rounded like
    diffusers' `numpy_to_pil`; uint8 passes through. Mixed sizes and non-finite pixels are
    refused: a NaN image is a broken pipeline (fp16 overflow), not a low score.
    """
    from PIL import Image

    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        items = list(images)
    elif isinstance(images, (torch.Tensor, np.ndarray, Image.Image)):
        items = [images]
    else:
        items = list(images)
    if not items:
        raise InsufficientSamples(f"{what}: no images")
    converted = [_one_image(x, what, i) for i, x in enumerate(items)]
    sizes: dict[tuple[int, int], int] = {}
    for x in converted:
        sizes[tuple(x.shape[1:])] = sizes.get(tuple(x.shape[1:]), 0) + 1
    if len(sizes) > 1:
        listing = ", ".join(f"{n} at {h}x{w}" for (h, w), n in sizes.items())
        raise ValueError(f"{what}: images of mixed sizes ({listing}, H x W); metrics compare like with like: "
                         "resize or group the images by size before scoring")
    return torch.stack(converted)


def _one_image(x, what: str, index: int) -> torch.Tensor:
    from PIL import Image

    if isinstance(x, Image.Image):
        return torch.from_numpy(np.asarray(x.convert("RGB")).copy()).permute(2, 0, 1)
    t = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x.detach().cpu()
    if t.ndim != 3:
        raise ValueError(f"{what}[{index}]: expected an image with 3 dims (CHW or HWC), got shape {tuple(t.shape)}")
    if t.shape[0] not in (1, 3) and t.shape[-1] in (1, 3):
        t = t.permute(2, 0, 1)  # HWC -> CHW
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    if t.shape[0] != 3:
        raise ValueError(f"{what}[{index}]: expected 1 or 3 channels, got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.contiguous()
    if not t.is_floating_point():
        raise ValueError(f"{what}[{index}]: dtype {t.dtype}; pass uint8 or float images in [0, 1]")
    t = t.float()
    bad = (~torch.isfinite(t)).sum().item()
    if bad:
        raise ValueError(f"{what}[{index}]: {bad} non-finite pixel values (NaN/Inf): the pipeline's output is "
                         "broken (often fp16 overflow in the VAE), there is nothing to score")
    lo, hi = t.min().item(), t.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"{what}[{index}]: float pixels span [{lo:.3f}, {hi:.3f}]; expected [0, 1] "
                         "(diffusers output_type='np' or 'pt'); convert [-1, 1] images with (x + 1) / 2")
    return (t.clamp(0, 1) * 255).round().to(torch.uint8)


# ---------------------------------------------------------------- feature extraction
@dataclass
class ImageFeatures:
    """Features of one image set: `pool` for FID/KID, `logits` for IS (float64, CPU)."""

    pool: torch.Tensor
    logits: torch.Tensor | None
    image_size: tuple[int, int]
    extractor: str

    @property
    def n(self) -> int:
        return int(self.pool.shape[0])


class ImageFeatureExtractor:
    """A feature model held once per session, run batched on its device.

    Subclasses implement `_forward(uint8 batch on device) -> (pool, logits or None)`.
    """

    label = "feature extractor"
    random_weights = False

    def __init__(self, module: nn.Module, device: str | torch.device = "cpu", batch_size: int = 32):
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.batch_size = batch_size

    def _forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    @torch.inference_mode()
    def extract(self, images, what: str = "images") -> ImageFeatures:
        return self.extract_batches([as_uint8_nchw(images, what)], what)

    @torch.inference_mode()
    def extract_batches(self, batches: Iterable, what: str = "images") -> ImageFeatures:
        """Features of images that arrive in batches (a real set too large to hold at once)."""
        pools, logits, size = [], [], None
        for batch in batches:
            if not (isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8 and batch.ndim == 4
                    and batch.shape[1] == 3):
                batch = as_uint8_nchw(batch, what)
            if size is not None and tuple(batch.shape[2:]) != size:
                raise ValueError(f"{what}: images of mixed sizes ({size} and {tuple(batch.shape[2:])})")
            size = tuple(batch.shape[2:])
            for start in range(0, batch.shape[0], self.batch_size):
                pool, logit = self._forward(batch[start:start + self.batch_size].to(self.device))
                pools.append(pool.double().cpu())
                if logit is not None:
                    logits.append(logit.double().cpu())
        if not pools:
            raise InsufficientSamples(f"{what}: no images")
        out = ImageFeatures(torch.cat(pools), torch.cat(logits) if logits else None, size, self.label)
        for name, t in (("pool features", out.pool), ("logits", out.logits)):
            if t is not None and not torch.isfinite(t).all():
                rows = (~torch.isfinite(t)).any(dim=1).nonzero().flatten().tolist()
                raise ValueError(f"{what}: {self.label} produced non-finite {name} for images {rows[:10]}"
                                 f"{' ...' if len(rows) > 10 else ''}; the feature model is broken or ran in a "
                                 "dtype that overflows")
        return out


class InceptionFeatures(ImageFeatureExtractor):
    """The standard FID Inception-v3 (TF 2015-12-05 weights) through torchmetrics' module.

    One pass yields the 2048-d pool features (FID, KID) and the 1008 unbiased logits (IS).
    `antialias=True` is torchmetrics >= 1.8's default resize to 299; False is the TF1 bilinear
    resize of torch-fidelity and the original FID code. Published FIDs used the latter.
    """

    def __init__(self, weights: str | None = None, device="cpu", batch_size: int = 32, antialias: bool = True):
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = resolve_file("inception", weights)
        load_checkpoint(path, "inception")  # a truncated file fails here, with a readable message

        class _Both(NoTrainInceptionV3):
            def forward(self, x):
                return self._torch_fidelity_forward(x)

        try:
            module = _Both("inception-v3-compat", ["2048", "logits_unbiased"], str(path), antialias=antialias)
        except RuntimeError as error:
            raise MetricWeightsCorrupt(f"inception: {path} does not fit torch-fidelity's Inception-v3: "
                                       f"{str(error).splitlines()[0]}") from None
        super().__init__(module, device, batch_size)
        self.label = f"Inception-v3 pool3 (TF 2015-12-05, antialias={antialias})"

    def _forward(self, batch):
        pool, logits = self.module(batch)
        return pool, logits


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


# ---------------------------------------------------------------- a real image set
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def real_image_batches(source, size: int, batch_size: int = 64, limit: int | None = None) -> Iterable[torch.Tensor]:
    """uint8 batches from a folder of images (sorted by name), resized and center-cropped to `size`.

    Sorted, because `os.listdir` order differs between machines and a limit must pick the same
    files everywhere. Shorter side to `size` (bicubic, PIL) then a center crop, as for COCO FID.
    """
    from pathlib import Path

    from PIL import Image

    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"real image set {folder}: not a directory of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise InsufficientSamples(f"real image set {folder}: no {'/'.join(IMAGE_SUFFIXES)} files")
    batch: list[torch.Tensor] = []
    for path in files:
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = size / min(image.size)
            w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
            image = image.resize((w, h), Image.BICUBIC)
            left, top = (w - size) // 2, (h - size) // 2
            image = image.crop((left, top, left + size, top + size))
            batch.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def fid_vs_real(extractor: ImageFeatureExtractor, candidate: ImageFeatures, real_source, *, limit: int | None = None,
                real_features: ImageFeatures | None = None) -> tuple[DistributionResult, ImageFeatures]:
    """FID of a candidate set against a real image folder; returns the real features to reuse."""
    if real_features is None:
        size = candidate.image_size[0]
        real_features = extractor.extract_batches(real_image_batches(real_source, size, limit=limit), "real images")
    return fid(candidate, real_features, what="candidate vs real images"), real_features


def finite_or_raise(values: Sequence[float], what: str) -> np.ndarray:
    """Per-sample metric values as float64, refusing NaN/Inf with the offending indices."""
    arr = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{what}: non-finite values at {bad[:10].tolist()} of {arr.size}")
    return arr


__all__ = [
    "InsufficientSamples", "as_uint8_nchw", "ImageFeatures", "ImageFeatureExtractor", "InceptionFeatures",
    "DistributionResult", "fid", "kid", "inception_score", "real_image_batches", "fid_vs_real", "finite_or_raise",
]
