"""The backend axis: one frozen `BackendSpec` per acceleration.

Every backend, built-in or a user's `factory = "module:function"`, is applied the same way:
`apply(pipe, **options)` on a freshly loaded pipeline, returning the pipeline to use. What a
backend cannot serve is declared (`serves`) so the matrix leaves it out as n/a; what it needs
(CUDA, a package) is declared (`needs_cuda`, `packages`) so a missing piece is a skip that
says what to install, never a crash.
"""
from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Mapping

from accelgate.models.registry import ModelSpec
from accelgate.registry import Registry, frozen_mapping


@dataclass(frozen=True)
class Requirement:
    """A package a backend imports, and the pip line that provides it."""

    module: str
    install: str

    def missing(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is None
        except (ImportError, ValueError):
            return True


def _serves_all(model: ModelSpec) -> str | None:
    return None


def _no_context(pipe: Any) -> ContextManager[None]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class BackendSpec:
    """One acceleration.

    - `apply(pipe, **options) -> pipe`: applied to a freshly loaded pipeline on its device.
    - `options`: defaults, overridden key by key by `[tool.accelgate.backend.<name>]`.
    - `serves(model) -> str | None`: None if the backend can serve the model, else the
      n/a reason shown in the report ("needs a UNet").
    - `call_context(pipe)`: entered around every pipeline call (cache hooks reset state here).
    - `needs_cuda`, `packages`: what must be present, else the case is skipped with a reason.
    - `skips_work`: a cache that skips denoiser work between steps; a run in which it skipped
      none is a silent no-op and fails (`accelgate.skipped_work`).
    - `changes_numerics`: compile, reduced precision, quantization, caches: a float output that
      equals the reference's bit for bit means it did not apply (a silent fallback).
    """

    name: str
    apply: Callable[..., Any]
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=frozen_mapping)
    needs_cuda: bool = False
    packages: tuple[Requirement, ...] = ()
    serves: Callable[[ModelSpec], str | None] = field(default=_serves_all, compare=False)
    call_context: Callable[[Any], ContextManager[Any]] = field(default=_no_context, compare=False)
    lossy: bool = False  # documentation: a lossy backend needs an explicit, reasoned tolerance
    skips_work: bool = False  # a cache: the quality gate fails it when it skipped no denoiser work
    changes_numerics: bool = False  # float output bitwise equal to the reference's is a "did it apply?" finding
    compiles: bool = False  # a compiler: shape switches belong to the speed gate (accelgate.state_check)
    user: bool = False  # declared in a config file through `factory`
    factory: str = ""  # a user backend's "module:function", named in its error messages

    def skip_reason(self, device: str) -> str | None:
        """Why this backend cannot run here, phrased as what to do; None when it can."""
        problems = []
        if self.needs_cuda and not device.startswith("cuda"):
            problems.append(f"a CUDA device (running on {device}; run on a GPU machine with --device cuda)")
        missing = [r for r in self.packages if r.missing()]
        if missing:
            problems.append("missing package(s) " + "; ".join(f"{r.module} ({r.install})" for r in missing))
        return f"backend {self.name!r} needs " + " and ".join(problems) if problems else None

    def apply_to(self, pipe: Any) -> Any:
        """Apply with the configured options; the one place that checks a pipeline came back."""
        return returned_pipeline(self.apply(pipe, **dict(self.options)), self)

    def with_options(self, options: Mapping[str, Any]) -> "BackendSpec":
        from dataclasses import replace

        merged = dict(self.options)
        merged.update(options)
        return replace(self, options=frozen_mapping(merged))


def returned_pipeline(result: Any, spec: BackendSpec) -> Any:
    """`result` if it is a diffusers pipeline, else a TypeError naming the backend (and a
    user backend's factory) and the usual mistake."""
    from diffusers import DiffusionPipeline

    if isinstance(result, DiffusionPipeline):
        return result
    hint = " (did it modify the pipeline in place and forget `return pipe`?)" if result is None else ""
    who = f"backend {spec.name!r}" + (f": factory {spec.factory!r}" if spec.factory else "")
    what = "factory" if spec.factory else "apply function"
    raise TypeError(f"{who} returned {type(result).__name__}{hint}, not a diffusers DiffusionPipeline; the {what} "
                    "must return the pipeline to run (the one it was given, modified, or a new one)")


BACKENDS: Registry[BackendSpec] = Registry("backend")


def register(spec: BackendSpec) -> BackendSpec:
    return BACKENDS.register(spec.name, spec)


def get_backend(name: str) -> BackendSpec:
    return BACKENDS.get_entry(name)
