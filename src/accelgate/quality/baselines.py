"""Stored reference images: lossless PNGs plus a manifest of how they were made.

Layout: `<baseline_dir>/<device class>/<model>/<WxH>/{manifest.json, 00.png, ...}`. Device
classes keep CPU and each GPU model apart, because the same seed gives other pixels on
other hardware. A regen writes the new case directory beside the old one and swaps them by
renaming, so an interrupted regen leaves the previous baseline readable: if the swap itself
is cut between its two renames, the next read restores the old directory.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from accelgate.errors import CaseFailed

MANIFEST = "manifest.json"
FORMAT = 1


class BaselineError(CaseFailed):
    """A baseline is missing, unreadable or stale; the message says how to regenerate it."""


def image_sha256(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, image: np.ndarray) -> None:
    path.write_bytes(encode_png(image))


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return np.asarray(image.convert("RGB"))


@dataclass(frozen=True)
class Baseline:
    directory: Path
    manifest: dict[str, Any]
    images: tuple[np.ndarray, ...]


class BaselineStore:
    def __init__(self, root: Path, device_class: str, regen_command: "callable"):
        self.root = Path(root)
        self.device_class = device_class
        self.regen_command = regen_command  # case id -> the exact command that rewrites it

    def case_dir(self, model: str, resolution: str) -> Path:
        return self.root / self.device_class / model / resolution

    def _recover(self, target: Path) -> None:
        """Finish a swap cut between its two renames: put the previous baseline back."""
        if target.exists():
            return
        leftovers = sorted(target.parent.glob(f".{target.name}.old-*")) if target.parent.exists() else []
        if leftovers:
            leftovers[-1].rename(target)

    def write(self, model: str, resolution: str, manifest: dict[str, Any], images: list[np.ndarray]) -> Path:
        """Atomically replace the case's baseline with these images and manifest."""
        target = self.case_dir(model, resolution)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._recover(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
        try:
            entries = []
            for index, (entry, image) in enumerate(zip(manifest["images"], images)):
                name = f"{index:02d}.png"
                write_png(staging / name, image)
                entries.append({**entry, "file": name, "sha256": image_sha256(image)})
            full = {**manifest, "format": FORMAT, "images": entries}
            with (staging / MANIFEST).open("w", encoding="utf-8") as handle:
                json.dump(full, handle, indent=2, ensure_ascii=False, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            old = None
            if target.exists():
                old = target.parent / f".{target.name}.old-{os.getpid()}"
                target.rename(old)
            staging.rename(target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def read(self, case_id: str, model: str, resolution: str) -> Baseline:
        directory = self.case_dir(model, resolution)
        self._recover(directory)
        regen = self.regen_command(case_id)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            raise BaselineError(
                f"no baseline for {model} at {resolution} on device class {self.device_class!r} "
                f"(looked for {manifest_path}). Create it with:\n    {regen}"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT or not isinstance(manifest.get("images"), list):
                raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT} with an 'images' list")
        except (ValueError, UnicodeDecodeError) as error:
            raise BaselineError(f"baseline manifest {manifest_path} is corrupt or truncated ({error}). "
                                f"Regenerate it with:\n    {regen}") from None
        images = []
        for entry in manifest["images"]:
            path = directory / str(entry.get("file", ""))
            try:
                image = read_png(path)
            except (OSError, ValueError, SyntaxError) as error:
                raise BaselineError(f"baseline image {path} is unreadable ({error}). Regenerate it with:\n    {regen}") from None
            if entry.get("sha256") and image_sha256(image) != entry["sha256"]:
                raise BaselineError(f"baseline image {path} does not match the hash in its manifest: the file was "
                                    f"changed or damaged. Regenerate it with:\n    {regen}")
            images.append(image)
        return Baseline(directory, manifest, tuple(images))


def build_manifest(case, settings: dict[str, Any], model_hash: str, prompts: list[dict[str, Any]], dev_class: str) -> dict[str, Any]:
    import diffusers
    import torch
    import transformers

    return {
        "model": case.model.id,
        "reference_backend": case.backend.name,
        "resolution": list(case.resolution),
        "model_hash": model_hash,
        "settings": settings,
        "images": prompts,
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__},
        "device_class": dev_class,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def stale_fields(baseline: Baseline, settings: dict[str, Any], prompts: list[dict[str, Any]], model_hash: str) -> list[str]:
    """What differs between how the baseline was made and what the config asks for now."""
    stored = baseline.manifest
    problems = []
    for key, value in settings.items():
        old = stored.get("settings", {}).get(key)
        if old != value:
            problems.append(f"{key}: baseline has {old!r}, config has {value!r}")
    old_prompts = [(p.get("prompt"), p.get("seed")) for p in stored.get("images", [])]
    new_prompts = [(p.get("prompt"), p.get("seed")) for p in prompts]
    if old_prompts != new_prompts:
        problems.append(f"prompts: baseline has {len(old_prompts)} image(s) {old_prompts[:2]}..., "
                        f"config asks for {len(new_prompts)} {new_prompts[:2]}...")
    if stored.get("model_hash") != model_hash:
        versions = stored.get("versions", {})
        problems.append(
            f"model_hash: the model's weights changed ({stored.get('model_hash')} -> {model_hash}); the baseline "
            f"was made with torch {versions.get('torch')}, diffusers {versions.get('diffusers')}: a torch/diffusers "
            "upgrade or a new tiny-model recipe changed the built weights, so every comparison with this baseline "
            "would be meaningless"
        )
    return problems
