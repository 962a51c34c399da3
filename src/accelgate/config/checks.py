"""Value checks the schema's types cannot express: each turns a setting that would switch the
gate off, or fail far from its cause, into a `ConfigError` naming the file, the table and the key.

Why each exists (all found by trying bad inputs on the landed code):
- `steps = -3` made an undenoised baseline against which heavy noise passed; `steps = 0` ended
  in a ZeroDivisionError blamed on the case;
- a tolerance outside its metric's range (`ssim = -2`, `max_abs = 300`) passed a noise backend,
  and one no image can meet (`ssim = 1.5`) was reported as reference drift;
- a misspelt backend option or `call_kwargs` key was swallowed by `**kwargs` and recorded in
  the manifest as if applied;
- duplicate names ran every case twice; an empty list ran nothing, or everything.

`check_libraries` needs diffusers (so torch): the plugin calls it once cases are collected,
still before any case runs; everything else here is pure.
"""
from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

from accelgate.config.schema import ConfigError, format_resolution
from accelgate.metrics.catalog import PER_IMAGE

LARGE_FACTOR = 4  # a resolution with more than 4x the pixels of the model's largest native one is refused
# set by accelgate from the model's settings and the case: a call_kwargs entry must not override them
RESERVED_CALL_KWARGS = {
    "num_inference_steps": "steps", "guidance_scale": "guidance_scale", "generator": "seed",
    "output_type": None, "prompt": "prompt_set", "negative_prompt": "prompt_set", "class_labels": "prompt_set",
    "image": "prompt_set", "height": "resolutions", "width": "resolutions",
}


def _near(name: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_generation(settings: Mapping[str, Any], place: str) -> None:
    """steps >= 1, prompt_limit >= 1, seed >= 0, a finite guidance scale."""
    for key, low in (("steps", 1), ("prompt_limit", 1), ("seed", 0)):
        value = settings.get(key)
        if value is not None and value < low:
            why = {"steps": "a pipeline with fewer than one denoising step makes no image to compare",
                   "prompt_limit": "it is the number of prompts each case generates",
                   "seed": "torch generators take seeds >= 0"}[key]
            raise ConfigError(f"{place}: {key} must be >= {low} ({why}), got {value}")
    guidance = settings.get("guidance_scale")
    if guidance is not None and not math.isfinite(float(guidance)):
        raise ConfigError(f"{place}: guidance_scale must be a finite number, got {guidance}")


def check_tolerances(values: Mapping[str, float], place: str) -> None:
    """Every per-image threshold within its metric's range: a threshold below the range passes
    any damage, one above it fails every image (and reads as reference drift)."""
    for name, value in values.items():
        low, high = PER_IMAGE[name].bounds
        if math.isnan(value) or not low <= value <= high:
            direction = "at least" if PER_IMAGE[name].higher_is_better else "at most"
            raise ConfigError(
                f"{place}: {name} = {value} is outside {name}'s range [{low:g}, {high:g}] "
                f"({PER_IMAGE[name].label}; the threshold is the value an image must reach {direction}). "
                f"The default is {PER_IMAGE[name].quality_tolerance:g}")


def check_unique(names: list, key: str, place: str) -> None:
    """No name twice, no empty list: both ran cases the user did not ask for."""
    if not names:
        raise ConfigError(f"{place}: {key} is empty; list at least one (or leave the key out for the default)")
    if key != "resolutions" and not all(isinstance(name, str) for name in names):
        raise ConfigError(f"{place}: {key} must be a list of names (strings), got {names!r}")
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{place}: {key} lists {name!r} twice; every case would run twice: keep one")
        seen.add(name)


def check_size(model_id: str, resolutions, native, allow_large: bool, place: str) -> None:
    """Refuse a resolution with more than LARGE_FACTOR x the pixels of the model's largest native
    one (the catalog's): a 4096x4096 tiny case ran for hours instead of failing."""
    if allow_large or not native:
        return
    largest = max(native, key=lambda r: r[0] * r[1])
    for resolution in resolutions:
        if resolution[0] * resolution[1] > LARGE_FACTOR * largest[0] * largest[1]:
            raise ConfigError(
                f"{place}: {format_resolution(resolution)} has more than {LARGE_FACTOR}x the pixels of {model_id}'s "
                f"largest native resolution {format_resolution(largest)}: such a case can run for hours or run out "
                "of memory. If you mean it, add allow_large = true to the model's table")


def check_options(name: str, apply, options: Mapping[str, Any], place: str) -> None:
    """A backend's options must be keyword arguments its apply function (or factory) takes."""
    try:
        signature = inspect.signature(apply)
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to check against
    params = list(signature.parameters.values())[1:]  # the first one is the pipeline
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    allowed = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in options:
        if key not in allowed:
            what = getattr(apply, "__qualname__", str(apply))
            raise ConfigError(f"{place}: options: {key!r} is not an option of backend {name!r}{_near(key, allowed)}; "
                              f"{what}{signature} takes: {', '.join(allowed) or 'no options'}")


def configured(models, raw: Mapping[str, Any]) -> list:
    """The models whose pipeline, scheduler or call_kwargs the config sets (the catalog's own are
    tested with the catalog): the only ones `check_libraries` needs to import a pipeline for."""
    from accelgate.models.registry import MODELS

    general = "scheduler" in raw.get("generation", {})
    tables = raw.get("model", {})
    return [m for m in models if m.id not in MODELS or general
            or {"scheduler", "call_kwargs"} & set(tables.get(m.id, {}))]


def check_libraries(models) -> None:
    """What only diffusers can answer, once, before any case runs: each model's scheduler is a
    diffusers scheduler class, its pipeline class exists, and every `call_kwargs` key is a named
    parameter of that pipeline's `__call__` (not swallowed by its `**kwargs`). A pipeline that
    cannot even be imported here is left to its cases, which report why."""
    models = list(models)
    if not models:
        return  # nothing to check: no diffusers (and no torch) import for it
    import diffusers

    for model in models:
        place = f"[model.{model.id}]"
        try:
            pipeline = getattr(diffusers, model.pipeline_class, None)
        except (ImportError, RuntimeError):  # a missing optional dependency: the case's load says so
            continue
        if not isinstance(pipeline, type):
            raise ConfigError(f"{place}: pipeline_class {model.pipeline_class!r} is not a diffusers pipeline class "
                              f"(diffusers {diffusers.__version__})")
        if model.scheduler:
            scheduler = getattr(diffusers, model.scheduler, None)
            if not (isinstance(scheduler, type) and issubclass(scheduler, diffusers.SchedulerMixin)):
                names = [n for n in dir(diffusers) if n.endswith("Scheduler")]
                raise ConfigError(f"{place}: scheduler {model.scheduler!r} is not a diffusers scheduler class"
                                  f"{_near(model.scheduler, names)}; e.g. DDIMScheduler, EulerDiscreteScheduler, "
                                  "DPMSolverMultistepScheduler")
        check_call_kwargs(model.id, pipeline, model.call_kwargs, place)


def check_call_kwargs(model_id: str, pipeline: type, call_kwargs: Mapping[str, Any], place: str) -> None:
    params = inspect.signature(pipeline.__call__).parameters
    named = [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    for key in call_kwargs:
        if key in RESERVED_CALL_KWARGS:
            setting = RESERVED_CALL_KWARGS[key]
            instead = f"; set {setting} in the model's table instead" if setting else ""
            raise ConfigError(f"{place}: call_kwargs: {key!r} is set by accelgate for every case{instead}")
        if key not in named:
            raise ConfigError(
                f"{place}: call_kwargs: {key!r} is not a parameter of {pipeline.__name__}.__call__"
                f"{_near(key, named)}: the pipeline would swallow it in **kwargs and the baseline manifest would "
                f"record it as applied. Parameters: {', '.join(named)}")
