"""Run one case's pipeline: deterministic images for every prompt of its set.

Noise comes from a CPU generator seeded per image (seed + index), so the starting latents
are the same on every device and the only thing that changes between backends is the
backend. Images are requested as float arrays so NaN/Inf survive until the degenerate-
output guard looks at them (a PIL conversion would silently turn them into black).
"""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from accelgate.errors import CaseFailed
from accelgate.prompts.sets import PromptItem, PromptSet, get_prompt_set, load_sample_image


class DegenerateOutput(CaseFailed):
    """The pipeline produced NaN/Inf, black or constant images: no metric is meaningful."""


@dataclass
class Generation:
    images: list[np.ndarray]  # uint8 HxWx3
    items: list[PromptItem]
    seeds: list[int]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    # sha256 of each float32 image before 8-bit rounding: equal only when the numerics are
    float_sha256: list[str] = field(default_factory=list)


def image_sha256(image: np.ndarray) -> str:
    """sha256 of an image array's bytes (uint8 for the stored PNGs, float32 for the fingerprints)."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def model_prompt_set(model) -> PromptSet:
    """The model's own prompts from its config table, else the embedded set it names."""
    if model.prompts:
        return PromptSet(model.prompt_set, tuple(model.prompts), f"the prompts of [model.{model.id}]", "config")
    return get_prompt_set(model.prompt_set)


def prompt_items(model) -> list[PromptItem]:
    return list(model_prompt_set(model).limited(model.prompt_limit))


def generation_settings(model) -> dict[str, Any]:
    """What decides the baseline's pixels, as recorded in (and checked against) the manifest."""
    return {
        "steps": model.steps,
        "seed": model.seed,
        "guidance_scale": model.guidance_scale,
        "scheduler": model.scheduler or "pipeline default",
        "dtype": model.dtype,
        "prompt_set": model.prompt_set,
        "call_kwargs": {k: model.call_kwargs[k] for k in sorted(model.call_kwargs)},
    }


def _class_label(pipe, item: PromptItem, index: int) -> int:
    """An ImageNet word through the pipeline's own id2label; tiny models have none, so the
    set position stands in, folded into the model's class count."""
    label = item.class_label
    labels = getattr(pipe, "labels", None) or {}
    if isinstance(label, str) and label in labels:
        return int(pipe.get_label_ids([label])[0])
    classes = int(getattr(pipe.transformer.config, "num_embeds_ada_norm", 1000) or 1000)
    return (label if isinstance(label, int) else index) % classes


def call_arguments(pipe, model, item: PromptItem, index: int, width: int, height: int, generator) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "num_inference_steps": model.steps,
        "guidance_scale": model.guidance_scale,
        "generator": generator,
        "output_type": "np",
    }
    if model.task == "class-conditional":
        kwargs["class_labels"] = [_class_label(pipe, item, index)]
    else:
        kwargs["prompt"] = item.prompt
        if item.negative_prompt:
            kwargs["negative_prompt"] = item.negative_prompt
    if model.task in ("image-to-image", "edit"):
        from PIL import Image

        if not item.image:
            raise ValueError(f"prompt set {model.prompt_set!r} has an item without an input image, "
                             f"but {model.id} is an {model.task} model")
        kwargs["image"] = load_sample_image(item.image).resize((width, height), Image.LANCZOS)
    elif model.task == "text-to-image":
        kwargs["height"], kwargs["width"] = height, width
    kwargs.update(model.call_kwargs)
    return kwargs


def check_degenerate(images: np.ndarray, items: list[PromptItem]) -> None:
    """Fail before any metric on output no metric can judge (the fp16 VAE overflow users hit)."""
    for index, image in enumerate(images):
        label = items[index].label()[:50] if index < len(items) else str(index)
        if not np.all(np.isfinite(image)):
            bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
            raise DegenerateOutput(
                f"degenerate output: image {index} ({label!r}) has {bad} NaN/Inf values. This is the classic fp16 "
                "VAE overflow: decode in float32 (pipe.upcast_vae() / an fp16-fix VAE) or keep the VAE out of the "
                "backend's dtype change"
            )
        if float(np.max(image)) * 255 < 1.5:
            raise DegenerateOutput(f"degenerate output: image {index} ({label!r}) is black (max level "
                                   f"{float(np.max(image)) * 255:.1f}/255): NaNs were probably clamped away")
        if float(np.ptp(image)) * 255 < 1.0:
            raise DegenerateOutput(f"degenerate output: image {index} ({label!r}) is a constant colour "
                                   f"(level {float(np.mean(image)) * 255:.1f}/255): the pipeline produced no content")


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """The same conversion diffusers' numpy_to_pil uses, so stored PNGs equal PIL outputs."""
    return [np.ascontiguousarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)) for image in images]


@contextmanager
def scheduler_steps(pipe, on_step: Callable[[int], Any]) -> Iterator[None]:
    """Call `on_step(index)` after every `scheduler.step` of the pipeline calls inside.

    Every diffusers denoising loop calls `scheduler.step` once per step, last, with or without
    step callbacks (DiT has none), so this sees the steps of any pipeline. The wrapper is an
    instance attribute, removed afterwards, and returns what the scheduler returned.
    """
    scheduler, index = pipe.scheduler, [0]
    original, patched_before = scheduler.step, "step" in vars(scheduler)

    def counted(*args, **kwargs):
        out = original(*args, **kwargs)
        on_step(index[0])
        index[0] += 1
        return out

    scheduler.step = counted
    try:
        yield
    finally:
        if patched_before:
            scheduler.step = original
        else:
            del scheduler.step  # the class method shows again


def _progress_steps(pipe, progress, case, image: int, images: int):
    """Report each step of one image to `progress` (see accelgate.progress), or do nothing."""
    if progress is None:
        return nullcontext()
    return scheduler_steps(pipe, lambda step: progress(case.id, image, images, step + 1, case.model.steps))


def generate(pipe, case, items: list[PromptItem] | None = None, extra_callback=None, progress=None) -> Generation:
    """All images of a case, through the backend's call context, timed end to end. `progress`,
    when given, hears of every denoising step (`progress(case_id, image, images, step, steps)`)
    and is cleared at the end (`progress.clear()`)."""
    import torch

    model = case.model
    items = items if items is not None else prompt_items(model)
    outputs, seeds = [], []
    started = time.perf_counter()
    try:
        for index, item in enumerate(items):
            seed = model.seed + index
            generator = torch.Generator("cpu").manual_seed(seed)
            kwargs = call_arguments(pipe, model, item, index, case.width, case.height, generator)
            if extra_callback is not None:
                kwargs["callback_on_step_end"] = extra_callback
            with case.backend.call_context(pipe), _progress_steps(pipe, progress, case, index, len(items)):
                result = pipe(**kwargs)
            array = np.asarray(result.images, dtype=np.float32)
            outputs.append(array[0] if array.ndim == 4 else array)
            seeds.append(seed)
    finally:
        if progress is not None:
            progress.clear()
    if pipe.device.type == "cuda":
        torch.cuda.synchronize(pipe.device)
    seconds = time.perf_counter() - started
    stacked = np.stack(outputs)
    check_degenerate(stacked, items)
    images = to_uint8(stacked)
    expected = (case.height, case.width, 3)
    if images[0].shape != expected:
        raise ValueError(f"{case.id}: the pipeline made {images[0].shape[1]}x{images[0].shape[0]} images, "
                         f"expected {case.width}x{case.height}: the model cannot make this resolution")
    return Generation(images, list(items), seeds, seconds, float_sha256=[image_sha256(image) for image in stacked])
