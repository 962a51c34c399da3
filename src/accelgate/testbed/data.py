"""Training data: rendered scene pools and their VAE latents, cached on disk once.

Why pools and not rendering per step: a 64 px scene costs ~7 ms to draw (4x supersampled),
as much as a training step of a tiny denoiser. Each pool is a pure function of its seed and
size and is cached under the training output's work folder (`.work/`), so `--resume` and
later components reuse it. Batches are drawn by index with a generator seeded by (component,
step), so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from accelgate.testbed import world

POOL_SEEDS = {32: 1001, 64: 1002}
EDIT_SEEDS = {32: 2001, 64: 2002}
WORLD_VERSION = "1"  # bump when world.py changes what a seed draws


@dataclass
class ScenePool:
    """Rendered training scenes of one size (all outside the held-out combinations)."""

    size: int
    images: torch.Tensor  # uint8 [N, H, W, 3]
    captions: list[str]
    labels: torch.Tensor  # DiT class of the main object [N]
    single: torch.Tensor  # bool [N]: one object (DiT and the judges' attribute heads use these)
    attributes: torch.Tensor  # long [N, 6]: shape, colour, position, size, background, kind of the main object


@dataclass
class EditPool:
    size: int
    sources: torch.Tensor  # uint8 [N, H, W, 3]
    targets: torch.Tensor
    instructions: list[str]
    target_captions: list[str]
    kinds: list[str]


def attribute_row(scene: world.Scene) -> list[int]:
    o = scene.main
    return [world.SHAPES.index(o.shape), world.COLOUR_NAMES.index(o.colour), world.POSITIONS.index(o.position),
            world.SIZE_NAMES.index(o.size), world.BACKGROUND_NAMES.index(scene.background),
            world.BACKGROUND_KINDS.index(scene.kind)]


def scene_pool(size: int, count: int, seed: int | None = None, train: bool = True, two_objects=None) -> ScenePool:
    seed = POOL_SEEDS[size] if seed is None else seed
    scenes = [world.scene_at(seed, i, train=train, two_objects=two_objects) for i in range(count)]
    images = np.stack([world.render(s, size) for s in tqdm(scenes, desc=f"render {count} scenes @{size}px",
                                                           leave=False, mininterval=5)])
    return ScenePool(
        size=size,
        images=torch.from_numpy(images),
        captions=[s.caption() for s in scenes],
        labels=torch.tensor([s.class_label() for s in scenes]),
        single=torch.tensor([len(s.objects) == 1 for s in scenes]),
        attributes=torch.tensor([attribute_row(s) for s in scenes]),
    )


def edit_pool(size: int, count: int, seed: int | None = None) -> EditPool:
    seed = EDIT_SEEDS[size] if seed is None else seed
    edits = [world.edit_at(seed, i) for i in range(count)]
    src, tgt = [], []
    for e in tqdm(edits, desc=f"render {count} edits @{size}px", leave=False, mininterval=5):
        src.append(world.render(e.source, size))
        tgt.append(world.render(e.target, size))
    return EditPool(size, torch.from_numpy(np.stack(src)), torch.from_numpy(np.stack(tgt)),
                    [e.instruction for e in edits], [e.target.caption() for e in edits], [e.kind for e in edits])


def cached(work: Path, name: str, make):
    """`make()` once, then from `work/name.pt` (a torch pickle of dataclasses: our own files only)."""
    path = work / f"{name}-w{WORLD_VERSION}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    value = make()
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two training processes may build the same cache
    torch.save(value, tmp)
    tmp.replace(path)
    return value


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def encode(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """VAE posterior means (unscaled) of uint8 NHWC images."""
    out = []
    for start in range(0, images.shape[0], batch):
        out.append(vae.encode(to_unit(images[start:start + batch])).latent_dist.mean)
    return torch.cat(out)


def batch_indices(count: int, batch: int, *key: int) -> torch.Tensor:
    rng = np.random.default_rng([abs(int(k)) for k in key])
    return torch.from_numpy(rng.integers(0, count, size=batch))


def step_generator(*key: int) -> torch.Generator:
    """A torch generator for one step's noise and timesteps: a pure function of the key."""
    seed = int(np.random.default_rng([abs(int(k)) for k in key]).integers(0, 2**62))
    return torch.Generator().manual_seed(seed)
