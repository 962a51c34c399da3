"""Image damages the preference judges learn to dislike: blur, noise, colour cast, blockiness.

Why: an HPS- or aesthetic-style score that only measures prompt adherence would be CLIP
score again. The test bed's preference judges are fine-tuned to rank a clean world image
above the same image damaged the way a broken acceleration damages output (a soft image, a
noisy one, a tinted one, a low-resolution one), with the score falling as the damage grows.

Every function takes uint8 NHWC images and a severity in [0, 1] per image, and is a pure
function of its inputs and the generator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("blur", "noise", "cast", "blocky")


def _float(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2).float()


def _uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def blur(images: torch.Tensor, severity: torch.Tensor) -> torch.Tensor:
    """Gaussian blur, sigma up to 2 px per 32 px of image side."""
    x = _float(images)
    out = []
    size = x.shape[-1]
    for img, s in zip(x, severity.tolist()):
        sigma = max(1e-3, 2.0 * s * size / 32)
        radius = max(1, int(3 * sigma))
        k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
        k = (k / k.sum()).view(1, 1, 1, -1)
        y = F.pad(img[None], (radius, radius, 0, 0), mode="replicate")
        y = F.conv2d(y, k.expand(3, 1, 1, -1), groups=3)
        y = F.pad(y, (0, 0, radius, radius), mode="replicate")
        out.append(F.conv2d(y, k.transpose(-1, -2).expand(3, 1, -1, 1), groups=3)[0])
    return _uint8(torch.stack(out))


def noise(images: torch.Tensor, severity: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise, std up to 40 levels."""
    x = _float(images)
    return _uint8(x + torch.randn(x.shape, generator=generator) * (40.0 * severity).view(-1, 1, 1, 1))


def cast(images: torch.Tensor, severity: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A colour cast: up to 60 levels added to one channel and taken from another."""
    x = _float(images)
    n = x.shape[0]
    up = torch.randint(0, 3, (n,), generator=generator)
    down = (up + torch.randint(1, 3, (n,), generator=generator)) % 3
    shift = torch.zeros(n, 3)
    shift[torch.arange(n), up] = 60.0 * severity
    shift[torch.arange(n), down] = -60.0 * severity
    return _uint8(x + shift.view(n, 3, 1, 1))


def blocky(images: torch.Tensor, severity: torch.Tensor) -> torch.Tensor:
    """Down- then nearest up-sampling, by a factor of up to 4."""
    x = _float(images)
    size = x.shape[-1]
    out = []
    for img, s in zip(x, severity.tolist()):
        factor = 1.0 + 3.0 * s
        small = max(2, int(round(size / factor)))
        low = F.interpolate(img[None], size=(small, small), mode="area")
        out.append(F.interpolate(low, size=(size, size), mode="nearest")[0])
    return _uint8(torch.stack(out))


def damage(images: torch.Tensor, kinds: list[str], severity: torch.Tensor, generator: torch.Generator):
    """Apply kinds[i] at severity[i] to image i."""
    out = images.clone()
    for kind in KINDS:
        idx = torch.tensor([i for i, k in enumerate(kinds) if k == kind], dtype=torch.long)
        if idx.numel() == 0:
            continue
        sel, sev = images[idx], severity[idx]
        if kind == "blur":
            out[idx] = blur(sel, sev)
        elif kind == "noise":
            out[idx] = noise(sel, sev, generator)
        elif kind == "cast":
            out[idx] = cast(sel, sev, generator)
        else:
            out[idx] = blocky(sel, sev)
    return out


def random_kinds(n: int, generator: torch.Generator, kinds: tuple[str, ...] = KINDS) -> list[str]:
    """`n` kinds drawn uniformly from `kinds` (one `randint` on the generator)."""
    return [kinds[int(i)] for i in torch.randint(0, len(kinds), (n,), generator=generator)]
