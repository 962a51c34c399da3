"""Image features for the set metrics: uint8 batches in, Inception pool features and logits out.

Why features first: the gate compares one candidate set against the reference backend's set
and, when given, a real image set (COCO-30k val). Extracting each set's Inception features
once, batched on the device, and computing every statistic from them (`set_stats`) costs one
forward pass per image instead of one per metric per comparison. Mixed image sizes in a set,
non-finite pixels and non-finite features are errors.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from accelgate.metrics.weights import MetricWeightsCorrupt, load_checkpoint, resolve_file


class InsufficientSamples(ValueError):
    """Too few images for the statistic to mean anything."""


def finite_features(t: torch.Tensor, what: str, label: str) -> torch.Tensor:
    """`t` [N, D], or a ValueError naming the rows a feature model turned non-finite."""
    if not torch.isfinite(t).all():
        rows = (~torch.isfinite(t)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"{what}: {label} produced non-finite features for rows {rows[:10]}")
    return t


def cached_text_features(texts: list[str], cache: dict[str, torch.Tensor], batch_size: int,
                         encode: Callable[[list[str]], torch.Tensor]) -> list[torch.Tensor]:
    """Text embeddings through a per-string cache: the candidate and the reference backend score
    the same prompts, so each is encoded once, in batches of new strings."""
    todo = list(dict.fromkeys(t for t in texts if t not in cache))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        for text, row in zip(chunk, encode(chunk)):
            cache[text] = row
    return [cache[t] for t in texts]


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


# ---------------------------------------------------------------- a real image set
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def real_image_batches(source, size: int, batch_size: int = 64, limit: int | None = None) -> Iterable[torch.Tensor]:
    """uint8 batches from a folder of images (sorted by name), resized and center-cropped to `size`.

    Sorted, because `os.listdir` order differs between machines and a limit must pick the same
    files everywhere. Shorter side to `size` (bicubic, PIL) then a center crop, as for COCO FID.
    """
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
