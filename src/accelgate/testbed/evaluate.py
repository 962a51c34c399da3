"""What the trained test bed's images are worth, judged by the test bed's own judges.

Generation follows accelgate's convention (a CPU generator seeded with seed + index per
image, float output so small moves stay visible), and the judgements are the ones the
issue asks for: attribute accuracy of text-to-image output for its own prompt (GenEval
style), class accuracy for DiT, edit success for img2img / pix2pix (the instructed
attribute changed, every other named attribute kept), and domain FID/KID of a family's
images against world images of the same prompts.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from accelgate.testbed import build, judges, world

EDIT_FIELDS = ("shape", "colour", "position", "size", "background")


def generate(pipe, family: str, items, resolution: int, *, seed: int = 0, steps: int | None = None,
             guidance_scale: float | None = None, context=None, **overrides) -> np.ndarray:
    """Float images [N, H, W, 3] in [0, 1] (unclipped pipeline output), one per item."""
    pipe.set_progress_bar_config(disable=True)
    out = []
    for index, item in enumerate(items):
        kwargs = build.call_arguments(family, item, resolution, torch.Generator("cpu").manual_seed(seed + index),
                                      steps=steps, guidance_scale=guidance_scale)
        kwargs.update(overrides)
        with (context(pipe) if context is not None else contextlib.nullcontext()):
            images = pipe(**kwargs).images
        out.append(np.asarray(images, dtype=np.float32)[0])
    return np.stack(out)


def uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def rate(hits) -> float:
    hits = list(hits)
    return float(np.mean(hits)) if hits else float("nan")


def text_accuracy(classifier, images: np.ndarray, items) -> dict[str, float]:
    """Per attribute, the fraction of images in which the judge finds what the prompt said."""
    hits = judges.attribute_hits(classifier, uint8(images), [it.scene for it in items])
    out = {k: rate(v) for k, v in hits.items()}
    out["all"] = rate(all(h[i] for h in hits.values()) for i in range(len(items)))
    return out


def class_accuracy(classifier, images: np.ndarray, items) -> dict[str, float]:
    pred = judges.predict(classifier, uint8(images))
    shapes, colours = zip(*(world.class_attributes(it.class_label) for it in items))
    shape = [p == t for p, t in zip(pred["shape"], shapes)]
    colour = [p == t for p, t in zip(pred["colour"], colours)]
    return {"class": rate(a and b for a, b in zip(shape, colour)), "shape": rate(shape), "colour": rate(colour)}


def _named(scene: world.Scene) -> dict[str, str]:
    o = scene.main
    return {"shape": o.shape, "colour": o.colour, "position": o.position, "size": o.size, "background": scene.background}


def edit_success(classifier, images: np.ndarray, items) -> dict[str, float]:
    """changed: the judge sees the target's value of the edited attribute; kept: it sees the
    source's value of every other attribute; success: both."""
    pred = judges.predict(classifier, uint8(images))
    changed, kept = [], []
    for i, item in enumerate(items):
        edit = item.edit
        source, target = _named(edit.source), _named(edit.target)
        field = edit.kind
        changed.append(pred[field][i] == target[field])
        kept.append(all(pred[f][i] == source[f] for f in EDIT_FIELDS if f != field))
    by_kind = {}
    for kind in world.EDIT_KINDS:
        idx = [i for i, it in enumerate(items) if it.edit.kind == kind]
        by_kind[kind] = rate(changed[i] and kept[i] for i in idx)
    return {"success": rate(c and k for c, k in zip(changed, kept)), "changed": rate(changed), "kept": rate(kept),
            **{f"success_{k}": v for k, v in by_kind.items()}}


def world_images(items, resolution: int, kind: str = "text") -> np.ndarray:
    """The world's own rendering of what each item asks for (uint8 NHWC)."""
    scenes = [it.edit.target if kind == "edit" else it.scene for it in items]
    return world.render_batch(scenes, resolution)


def world_reference(n: int, resolution: int, seed: int = 4242) -> np.ndarray:
    """Fresh single-object world images that include held-out combinations (uint8 NHWC)."""
    return world.render_batch([world.scene_at(seed, i, two_objects=False, train=False) for i in range(n)], resolution)


def features(extractor, images) -> object:
    arr = images if images.dtype == np.uint8 else uint8(images)
    return extractor.extract(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous())


def fid_kid(candidate, reference) -> dict[str, float]:
    """FID and KID (torchmetrics' definitions through accelgate.metrics.set_stats) on judge features."""
    from accelgate.metrics.set_stats import fid, kid

    n = min(candidate.pool.shape[0], reference.pool.shape[0])
    return {"fid": float(fid(candidate, reference).value),
            "kid": float(kid(candidate, reference, subset_size=min(50, n)).value), "n": int(n)}


@contextlib.contextmanager
def captured_latents(pipe):
    """Record the latents the pipeline hands to `vae.decode`, in the denoiser's (scaled) space."""
    vae = pipe.vae
    decode = vae.decode
    seen: list[torch.Tensor] = []
    scale = vae.config.scaling_factor
    shift = vae.config.shift_factor if type(pipe).__name__.startswith("StableDiffusion3") else 0.0

    def recording(z, *args, **kwargs):
        seen.append(((z.detach().float() - (shift or 0.0)) * scale).cpu())
        return decode(z, *args, **kwargs)

    vae.decode = recording
    try:
        yield seen
    finally:
        vae.decode = decode


def world_latent_std(pipe, family: str, resolution: int, n: int = 64) -> float:
    """Mean per-image std of the VAE latents of world images, in the same scaled space."""
    from accelgate.testbed import data

    vae = pipe.vae
    images = torch.from_numpy(world_reference(n, resolution))
    with torch.no_grad():
        z = vae.encode(data.to_unit(images)).latent_dist.mean.double()
    shift = (vae.config.shift_factor or 0.0) if family == "tiny-sd3" else 0.0
    z = (z - shift) * vae.config.scaling_factor
    return float(z.flatten(1).std(dim=1).mean())
