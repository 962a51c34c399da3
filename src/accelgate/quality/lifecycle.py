"""The baselines' life after their first regen: what a regen changed, what is left over.

- `--regen-baselines=missing` writes only the cases whose baseline is missing, unreadable or
  stale (the manifest's settings, prompts or model hash differ from the config); a current one
  is kept and says so.
- After a regen, every written case is compared with the baseline it replaced: `new` (there
  was none), `unchanged` (the same image hashes), or `changed` with SSIM and PSNR of each new
  image against the old one, so a reviewer sees at once whether a "refresh" moved pixels.
- Orphans: baseline directories (ones the store wrote: they hold its manifest) of models or
  resolutions the config no longer has, in any device class. They are listed with their size;
  `--prune-baselines` removes them under the store's writer lock, and nothing else.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelgate.config.load import Config
from accelgate.config.schema import format_resolution

MANIFEST = "manifest.json"


def regen_change(case_id: str, previous: Any, images: list[np.ndarray]) -> dict[str, Any]:
    """What a regen did to one case, against the baseline it replaced (None: there was none)."""
    from accelgate.metrics.pairwise import compare_images
    from accelgate.generate import image_sha256
    from accelgate.verdict import json_number

    if previous is None:
        return {"id": case_id, "change": "new", "images": len(images)}
    old = list(previous.images)
    if len(old) == len(images) and all(image_sha256(a) == image_sha256(b) for a, b in zip(old, images)):
        return {"id": case_id, "change": "unchanged", "images": len(images)}
    moved = []
    for index, (new, before) in enumerate(zip(images, old)):
        if new.shape != before.shape:
            moved.append({"image": index, "note": f"size {before.shape[1]}x{before.shape[0]} -> {new.shape[1]}x{new.shape[0]}"})
            continue
        values = compare_images(new, before)
        moved.append({"image": index, "ssim": json_number(values["ssim"]), "psnr": json_number(values["psnr"])})
    return {"id": case_id, "change": "changed", "images": len(images), "previous_images": len(old), "moved": moved}


def change_line(change: dict[str, Any]) -> str:
    """One terminal / summary line of `regen_change`."""
    text = f"{change['id']}: {change['change']}"
    if change["change"] == "changed":
        ssims = [m["ssim"] for m in change["moved"] if isinstance(m.get("ssim"), float)]
        psnrs = [m["psnr"] for m in change["moved"] if isinstance(m.get("psnr"), float)]
        parts = [f"{len(change['moved'])} of {change['previous_images']} image(s) compared"]
        if ssims:
            parts.append(f"worst SSIM {min(ssims):.4f}")
        if psnrs:
            parts.append(f"worst PSNR {min(psnrs):.1f} dB vs the previous baseline")
        parts += [m["note"] for m in change["moved"] if "note" in m]
        text += " (" + ", ".join(parts) + ")"
    elif change["change"] == "current":
        text += " (kept: --regen-baselines=missing)"
    return text


@dataclass(frozen=True)
class Orphan:
    path: Path
    device_class: str
    model: str
    resolution: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "device_class": self.device_class, "model": self.model,
                "resolution": self.resolution, "bytes": self.size}

    def line(self) -> str:
        return f"{self.path} ({self.size / 1024:.0f} KiB): {self.model} at {self.resolution} is not in the matrix"


def find_orphans(root: Path, config: Config) -> list[Orphan]:
    """Baseline directories under `root` (every device class) whose model or resolution the
    config no longer has. Only directories holding the store's manifest count."""
    wanted = {(m.id, format_resolution(r)) for m in config.models for r in m.resolutions}
    found = []
    if not root.is_dir():
        return found
    for manifest in sorted(root.glob(f"*/*/*/{MANIFEST}")):
        directory = manifest.parent
        device_class, model, resolution = directory.parts[-3:]
        if any(part.startswith(".") for part in (device_class, model, resolution)):
            continue  # the store's .new- / .old- work directories
        if (model, resolution) not in wanted:
            size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
            found.append(Orphan(directory, device_class, model, resolution, size))
    return found


def prune(orphans: list[Orphan]) -> list[Orphan]:
    """Remove the orphans, each under the store's writer lock on its model directory; an empty
    model directory goes too. Returns what was removed."""
    from accelgate.quality.baselines import locked

    removed = []
    for orphan in orphans:
        if not (orphan.path / MANIFEST).is_file():  # only what the store wrote
            continue
        with locked(orphan.path.parent, exclusive=True):
            shutil.rmtree(orphan.path)
        removed.append(orphan)
        model_dir = orphan.path.parent
        if not any(model_dir.iterdir()):
            model_dir.rmdir()
    return removed
