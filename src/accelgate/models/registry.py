"""The model axis: one frozen `ModelSpec` per model, embedded tiny or real.

A spec says what the model is (pipeline class, task, denoiser kind), where its weights
come from (built offline, the HF cache, or a local path) and the generation settings the
seeds use for it. Adding a model is one `register(ModelSpec(...))` call. A spec names its
builder by import path, so describing the catalog imports no torch: a repository that
installs the plugin and runs none of its cases pays nothing for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from accelgate.registry import Registry, frozen_mapping
TASKS = ("text-to-image", "image-to-image", "edit", "class-conditional")
DENOISERS = ("unet", "transformer")
SOURCES = ("tiny", "hub")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the catalog.

    `source="tiny"`: `builder` ("module:function") names a function returning a pipeline
    built offline with a fixed seed; it is saved with `save_pretrained` and loaded back with
    `from_pretrained`, so the real loading path runs. `source="hub"`: `repo_id` is looked up in the local HF cache
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
    prompt_set: str  # an embedded set's name, or the name `prompts` below are recorded under
    dtype: str = "float32"
    scheduler: str | None = None  # diffusers scheduler class name; None keeps the pipeline's
    seed: int = 0
    prompt_limit: int | None = None  # how many prompts of the set one case generates
    repo_id: str = ""
    variant: str | None = None
    builder: str | None = None  # "module:function", imported only when the model is built
    call_kwargs: Mapping[str, Any] = field(default_factory=frozen_mapping)
    prompts: tuple = ()  # PromptItems given in the config (`prompts = [...]`), used instead of the named set
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
        if self.source == "tiny" and (not isinstance(self.builder, str) or ":" not in self.builder):
            raise ValueError(f"model {self.id!r}: a tiny model needs a builder 'module:function', got {self.builder!r}")
        if self.source == "hub" and not self.repo_id:
            raise ValueError(f"model {self.id!r}: a hub model needs a repo_id")


MODELS: Registry[ModelSpec] = Registry("model")


def register(spec: ModelSpec) -> ModelSpec:
    return MODELS.register(spec.id, spec)


def get_model(model_id: str) -> ModelSpec:
    return MODELS.get_entry(model_id)


def build(spec: ModelSpec) -> Any:
    """Run a tiny model's builder (imported now, not when the catalog was described)."""
    import importlib

    module, _, function = spec.builder.partition(":")
    return getattr(importlib.import_module(module), function)()
