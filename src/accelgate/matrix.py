"""The matrix: `Case(model, backend, resolution)` from the config, with applicability rules.

A combination a backend cannot serve (DeepCache on a transformer, a backend restricted to
other models in the config) is left out and kept as `NotApplicable`, so the report can show
it as n/a instead of pretending it was tested. Narrowing options (`--models`, `--backends`,
`--resolutions`) only remove cases; they never add one the config does not declare. They are
checked (`narrow`) when the session starts, from names alone; the matrix itself is built
when a test first asks for cases, because deciding what a backend serves may import
diffusers.
"""
from __future__ import annotations

from dataclasses import dataclass

from accelgate.backends.registry import BackendSpec
from accelgate.config.load import BackendChoice, Config
from accelgate.config.schema import ConfigError, format_resolution
from accelgate.models.registry import ModelSpec


@dataclass(frozen=True)
class Case:
    model: ModelSpec
    backend: BackendSpec
    resolution: tuple[int, int]  # (width, height)
    reference: bool  # this backend's images are the stored baselines

    @property
    def id(self) -> str:
        return f"{self.model.id}/{self.backend.name}/{format_resolution(self.resolution)}"

    @property
    def width(self) -> int:
        return self.resolution[0]

    @property
    def height(self) -> int:
        return self.resolution[1]


@dataclass(frozen=True)
class NotApplicable:
    model: str
    backend: str
    resolution: tuple[int, int]
    reason: str


@dataclass(frozen=True)
class Matrix:
    cases: tuple[Case, ...]
    not_applicable: tuple[NotApplicable, ...]

    def for_tasks(self, tasks: tuple[str, ...]) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if c.model.task in tasks)


def _serves(choice: BackendChoice, model: ModelSpec) -> str | None:
    if choice.models is not None and model.id not in choice.models:
        return f"the config runs {choice.spec.name} only on {', '.join(choice.models)}"
    return choice.spec.serves(model)


@dataclass(frozen=True)
class Narrowing:
    """What `--models`, `--backends` and `--resolutions` kept (None: all of the config's)."""

    models: tuple[str, ...] | None = None
    backends: tuple[str, ...] | None = None
    resolutions: tuple[tuple[int, int], ...] | None = None


def narrow(config: Config, models=None, backends=None, resolutions=None) -> Narrowing:
    """Check a narrowing against the config's names; a resolution no selected model has is an error."""
    if resolutions is not None:
        chosen = [m for m in config.models if models is None or m.id in models]
        available = {r for m in chosen for r in m.resolutions}
        unknown = [r for r in resolutions if r not in available]
        if unknown:
            raise ConfigError(
                f"--resolutions: {', '.join(format_resolution(r) for r in unknown)} is not a resolution of the "
                f"selected models; valid values: {', '.join(format_resolution(r) for r in sorted(available))}"
            )
    as_tuple = lambda values: None if values is None else tuple(values)  # noqa: E731
    return Narrowing(as_tuple(models), as_tuple(backends), as_tuple(resolutions))


def build_matrix(config: Config, models=None, backends=None, resolutions=None) -> Matrix:
    """The cartesian product model x backend x resolution, narrowed and filtered."""
    kept = narrow(config, models, backends, resolutions)
    chosen_models = [m for m in config.models if kept.models is None or m.id in kept.models]
    chosen_backends = [b for b in config.backends if kept.backends is None or b.spec.name in kept.backends]
    cases, skipped = [], []
    for model in chosen_models:
        for choice in chosen_backends:
            reason = _serves(choice, model)
            for resolution in model.resolutions:
                if kept.resolutions is not None and resolution not in kept.resolutions:
                    continue
                if reason:
                    skipped.append(NotApplicable(model.id, choice.spec.name, resolution, reason))
                else:
                    cases.append(Case(model, choice.spec, resolution, choice.spec.name == config.reference))
    return Matrix(tuple(cases), tuple(skipped))
