"""Stored reference images: lossless PNGs plus a manifest of how they were made.

Layout: `<baseline_dir>/<device class>/<model>/<WxH>/{manifest.json, 00.png, ...}`. Device
classes keep CPU and each GPU model apart, because the same seed gives other pixels on
other hardware.

**Writes are atomic and serialized.** A regen writes the new case directory beside the old
one (`.WxH.new-*`), records the swap in a journal (`.WxH.swap`), renames the old directory
aside (`.WxH.old-*`), renames the new one into place and removes the journal and the old copy.
Writers hold an exclusive `flock` on the model directory, readers a shared one, so two
concurrent regens (`-n 2`, two CI jobs) take turns and a reader never sees a swap half-done.
Only a swap its journal describes is ever finished (or rolled back) by the next reader or
writer; any other `.new-*`/`.old-*` directory is a leftover and is removed, never restored:
an `.old-*` copy must not come back once a newer state exists (the user deleted the baseline,
or a later regen wrote one). A case directory that is a symlink is kept: the new baseline is
written where it points (a dangling one is refused). Files and folders get the usual modes
(0666 / 0777 minus the umask), so a CI artifact reader under another user can read them.

**Reads trust nothing.** Every manifest field is type-checked, every image must carry its
sha256 and match it; each problem is a `BaselineError` naming the file and the regen command.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from accelgate.errors import CaseFailed
from accelgate.generate import image_sha256

MANIFEST = "manifest.json"
FORMAT = 1
# field -> (type, required); resolution and versions are checked further below
MANIFEST_FIELDS = {"format": (int, True), "images": (list, True), "settings": (dict, True), "model_hash": (str, True),
                   "model": (str, False), "reference_backend": (str, False), "resolution": (list, False),
                   "versions": (dict, False), "device_class": (str, False), "created": (str, False)}
IMAGE_FIELDS = {"file": (str, True), "sha256": (str, True), "prompt": (str, False), "seed": (int, False),
                "float_sha256": (str, False)}  # the float32 image before rounding: the "did it apply?" check


class BaselineError(CaseFailed):
    """A baseline is missing, unreadable or stale; the message says how to regenerate it."""


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


@contextlib.contextmanager
def locked(directory: Path, exclusive: bool) -> Iterator[None]:
    """flock on a directory: exclusive for writers and repairs, shared for readers (no lock
    file is left behind in the committed tree). Where flock is missing, no lock."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _type_errors(table: Any, fields: dict, where: str) -> list[str]:
    if not isinstance(table, dict):
        return [f"{where} must be a JSON object, got {type(table).__name__}"]
    problems = []
    for name, (kind, required) in fields.items():
        if name not in table:
            if required:
                problems.append(f"{where} has no {name!r}")
        elif not isinstance(table[name], kind) or isinstance(table[name], bool):
            problems.append(f"{where}: {name!r} must be a {kind.__name__}, got {type(table[name]).__name__} "
                            f"{table[name]!r:.60}")
    return problems


def manifest_problems(manifest: Any) -> list[str]:
    """Every field of a manifest with a wrong type, a missing required field, a missing hash."""
    problems = _type_errors(manifest, MANIFEST_FIELDS, "the manifest")
    if problems:
        return problems
    if manifest["format"] != FORMAT:
        problems.append(f"format {manifest['format']!r}, this accelgate reads format {FORMAT}")
    resolution = manifest.get("resolution", [1, 1])
    if len(resolution) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in resolution):
        problems.append(f"'resolution' must be [width, height] in pixels, got {resolution!r}")
    if not all(isinstance(v, str) for v in manifest.get("versions", {}).values()):
        problems.append(f"'versions' must map package names to version strings, got {manifest['versions']!r}")
    for index, entry in enumerate(manifest["images"]):
        problems += _type_errors(entry, IMAGE_FIELDS, f"image entry #{index}")
        if isinstance(entry, dict) and "sha256" not in entry:
            problems[-1] += " (an image without its hash cannot be told apart from an edited or damaged one)"
    return problems


class BaselineStore:
    def __init__(self, root: Path, device_class: str, regen_command: "callable"):
        self.root = Path(root)
        self.device_class = device_class
        self.regen_command = regen_command  # case id -> the exact command that rewrites it

    def case_dir(self, model: str, resolution: str) -> Path:
        return self.root / self.device_class / model / resolution

    @staticmethod
    def _real(target: Path, regen: str) -> Path:
        """Where the case's files live: the target, or where its symlink points (kept as is)."""
        if not target.is_symlink():
            return target
        real = target.resolve()
        if not real.is_dir():
            raise BaselineError(f"baseline directory {target} is a symlink to {real}, which is not a directory: "
                                f"accelgate writes baselines where such a link points and will not replace the link. "
                                f"Create {real}, or remove the link to keep baselines in place; then:\n    {regen}")
        return real

    # -- repairs (under the exclusive lock) -----------------------------------------------
    @staticmethod
    def _journal(work: Path) -> Path:
        return work.parent / f".{work.name}.swap"

    def _leftovers(self, work: Path) -> list[Path]:
        return sorted(p for pattern in (f".{work.name}.new-*", f".{work.name}.old-*") for p in work.parent.glob(pattern))

    def _needs_repair(self, work: Path) -> bool:
        return self._journal(work).exists() or bool(self._leftovers(work))

    def _recover(self, work: Path) -> None:
        """Finish the swap the journal describes (the new directory was complete before the
        journal was written, so it wins; the old one only when the new one is gone), then remove
        every leftover. Without a journal nothing is restored."""
        journal = self._journal(work)
        if journal.exists():
            try:
                swap = json.loads(journal.read_text(encoding="utf-8"))
                new, old = work.parent / str(swap["new"]), work.parent / str(swap.get("old") or "")
            except (OSError, ValueError, KeyError, TypeError):
                new = old = None  # a torn journal: the swap had not started (it is written before any rename)
            if new is not None and not work.exists():
                if new.is_dir() and (new / MANIFEST).is_file():
                    new.rename(work)
                elif old.name and old.is_dir():
                    old.rename(work)
            journal.unlink()
            _fsync_directory(work.parent)
        for leftover in self._leftovers(work):
            shutil.rmtree(leftover, ignore_errors=True)

    # -- writing ----------------------------------------------------------------------------
    def write(self, model: str, resolution: str, manifest: dict[str, Any], images: list[np.ndarray]) -> Path:
        """Atomically replace the case's baseline with these images and manifest."""
        target = self.case_dir(model, resolution)
        work = self._real(target, self.regen_command(f"{model}/-/{resolution}"))
        work.parent.mkdir(parents=True, exist_ok=True)
        with locked(work.parent, exclusive=True):
            self._recover(work)
            staging = work.parent / f".{work.name}.new-{os.getpid()}-{secrets.token_hex(3)}"
            old = work.parent / f".{work.name}.old-{os.getpid()}-{secrets.token_hex(3)}"
            journal = self._journal(work)
            try:
                staging.mkdir()  # 0777 minus the umask, unlike mkdtemp's 0700
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
                _fsync_directory(staging)
                journal.write_text(json.dumps({"new": staging.name, "old": old.name if work.exists() else None}))
                _fsync_directory(work.parent)
                if work.exists():
                    work.rename(old)
                staging.rename(work)
                _fsync_directory(work.parent)
                journal.unlink()
            except BaseException:
                with contextlib.suppress(OSError):
                    if journal.exists() and not work.exists() and old.is_dir():
                        old.rename(work)  # roll back at once: the previous baseline stays in place
                    journal.unlink(missing_ok=True)
                shutil.rmtree(staging, ignore_errors=True)
                raise
            shutil.rmtree(old, ignore_errors=True)
        return target

    # -- reading ----------------------------------------------------------------------------
    def read(self, case_id: str, model: str, resolution: str) -> Baseline:
        regen = self.regen_command(case_id)
        directory = self.case_dir(model, resolution)
        work = self._real(directory, regen)
        if work.parent.is_dir() and self._needs_repair(work):
            try:
                with locked(work.parent, exclusive=True):
                    self._recover(work)
            except OSError as error:  # a read-only checkout: read what is there, say what is in the way
                if self._journal(work).exists() and not work.exists():
                    raise BaselineError(f"the baseline swap recorded in {self._journal(work)} was cut short and "
                                        f"cannot be finished here ({error.strerror or error}); make the directory "
                                        f"writable, or regenerate it with:\n    {regen}") from None
        manifest_path = work / MANIFEST
        if not work.parent.is_dir() or not manifest_path.is_file():
            raise BaselineError(
                f"no baseline for {model} at {resolution} on device class {self.device_class!r} "
                f"(looked for {manifest_path}). Create it with:\n    {regen}"
            )
        with locked(work.parent, exclusive=False):
            return self._read_locked(work, manifest_path, regen)

    def _read_locked(self, directory: Path, manifest_path: Path, regen: str) -> Baseline:
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise BaselineError(f"baseline manifest {manifest_path} is corrupt or truncated ({error}). "
                                f"Regenerate it with:\n    {regen}") from None
        problems = manifest_problems(manifest)
        if problems:
            raise BaselineError(f"baseline manifest {manifest_path} is not one accelgate can trust: "
                                + "; ".join(problems) + f". Regenerate it with:\n    {regen}")
        images = []
        for entry in manifest["images"]:
            path = directory / entry["file"]
            try:
                image = read_png(path)
            except (OSError, ValueError, SyntaxError) as error:
                raise BaselineError(f"baseline image {path} is unreadable ({error}). Regenerate it with:\n    {regen}") from None
            if image_sha256(image) != entry["sha256"]:
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
