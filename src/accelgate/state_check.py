"""A -> B -> A: does a backend carry state from one pipeline call into the next?

A cache that is not reset between calls, or a graph specialised on the last shape, makes an
image depend on the call before it. The gate compares one call's images with a baseline made
by a fresh pipeline, so such a leak stays invisible until a user's second call. The check:
after the case's own images (A: its resolution, one prompt per call), the same pipeline is
called at another resolution of the model with a batch of two (B), then A's first prompt
again, with A's seed. Without state, that third image equals the first one exactly: the
same pipeline, arguments and seed give the same bits on one device (measured on CPU for every
built-in backend of the tiny matrix; not yet measured on a GPU).

It runs once per (model, backend): on the case at the model's first configured resolution,
for backends that do not compile (a compiled backend switches shapes within its recompile
budget in the speed gate). It costs three single-prompt images.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from accelgate.generate import call_arguments, prompt_items, to_uint8
from accelgate.verdict import Check


def wants_state_check(case) -> bool:
    """The case carries the check: not the reference, no compiler, at the model's first resolution."""
    return (not case.reference and not case.backend.compiles
            and tuple(case.resolution) == tuple(case.model.resolutions[0]))


def other_resolution(case) -> tuple[int, int]:
    """B's resolution: the model's next configured one, or the case's own when it has one only."""
    others = [tuple(r) for r in case.model.resolutions if tuple(r) != tuple(case.resolution)]
    return others[0] if others else tuple(case.resolution)


def _call(pipe: Any, case, width: int, height: int, batch: int) -> list[np.ndarray]:
    import torch

    from accelgate.models.loading import prepare_resolution

    model = case.model
    item = prompt_items(model)[0]
    prepare_resolution(pipe, model, height, width, applied=True)
    kwargs = call_arguments(pipe, model, item, 0, width, height, torch.Generator("cpu").manual_seed(model.seed))
    if batch > 1:
        if "class_labels" in kwargs:
            kwargs["class_labels"] = kwargs["class_labels"] * batch
        else:
            kwargs["num_images_per_prompt"] = batch
    with case.backend.call_context(pipe):
        return to_uint8(np.asarray(pipe(**kwargs).images, dtype=np.float32))


def state_leak_check(pipe: Any, case, first_image: np.ndarray) -> Check:
    """Call B, then A again; the check is the largest level difference between the new A image
    and `first_image` (the case's first image), which must be 0."""
    width, height = other_resolution(case)
    _call(pipe, case, width, height, batch=2)
    again = _call(pipe, case, case.width, case.height, batch=1)[0]  # leaves the pipeline at A
    diff = int(np.abs(again.astype(np.int16) - first_image.astype(np.int16)).max())
    return Check("state_leak", float(diff), 0.0, False,
                 note=f"levels between the first image and the same call after a {width}x{height} batch of 2")


def leak_reason(backend: str, check: Check, case) -> str:
    width, height = other_resolution(case)
    return (f"state leaks between calls: after one call at {width}x{height} with a batch of 2, the same call as "
            f"this case's first image differs from it by up to {check.value:g} level(s): {backend} keeps state from "
            "one pipeline call into the next (a cache not reset, a shape-specialised graph); a user's second "
            "call would not make the image the gate checked")
