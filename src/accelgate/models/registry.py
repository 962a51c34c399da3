"""The model axis: one frozen `ModelSpec` per model, embedded tiny or real.

A spec says what the model is (pipeline class, task, denoiser kind), where its weights
come from (built offline, the HF cache, or a local path) and the generation settings the
seeds use for it. Adding a model is one `register(ModelSpec(...))` call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

TASKS = ("text-to-image", "image-to-image", "edit", "class-conditional")
DENOISERS = ("unet", "transformer")
SOURCES = ("tiny", "hub")
DTYPES = ("float32", "float16", "bfloat16")


def frozen_mapping(value: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only mapping, so frozen dataclasses stay hashable-in-spirit and unshared."""
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class ModelSpec:
    """One model of the catalog.

    `source="tiny"`: `builder()` returns a random-weight pipeline built offline with a fixed
    seed; it is saved with `save_pretrained` and loaded back with `from_pretrained`, so the
    real loading path runs. `source="hub"`: `repo_id` is looked up in the local HF cache
    (offline) unless the config gives a `path`.
    """

    id: str
    task: str
    pipeline_class: str
    denoiser: str
    source: str
    resolutions: tuple[tuple[int, int], ...]
    steps: int
    guidance_scale: float
    prompt_set: str
    dtype: str = "float32"
    scheduler: str | None = None  # diffusers scheduler class name; None keeps the pipeline's
    seed: int = 0
    prompt_limit: int | None = None  # how many prompts of the set one case generates
    repo_id: str = ""
    variant: str | None = None
    builder: Callable[[], Any] | None = field(default=None, compare=False, repr=False)
    call_kwargs: Mapping[str, Any] = field(default_factory=frozen_mapping)
    gpu: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("task", self.task, TASKS),
            ("denoiser", self.denoiser, DENOISERS),
            ("source", self.source, SOURCES),
            ("dtype", self.dtype, DTYPES),
        ):
            if value not in allowed:
                raise ValueError(f"model {self.id!r}: {name}={value!r}; expected one of {', '.join(allowed)}")
        if self.source == "tiny" and self.builder is None:
            raise ValueError(f"model {self.id!r}: a tiny model needs a builder")
        if self.source == "hub" and not self.repo_id:
            raise ValueError(f"model {self.id!r}: a hub model needs a repo_id")


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.id in MODELS:
        raise ValueError(f"model {spec.id!r} is registered twice")
    MODELS[spec.id] = spec
    return spec


def get_model(model_id: str) -> ModelSpec:
    try:
        return MODELS[model_id]
    except KeyError:
        raise KeyError(f"unknown model {model_id!r}; known models: {', '.join(sorted(MODELS))}") from None
