"""Damage backends: what broken accelerations do to a pipeline, at stated magnitudes.

They are the gate's proof that it can see damage on a given model: `pytest -m quality
--accelgate-selftest` runs each against the user's own models, baselines and tolerances and
fails when one passes (`accelgate.selftest`). Each imitates a failure the field has seen:

- `damage-noise`: a noisy kernel; seeded Gaussian noise of 10% of the denoiser output's std
  added at every step.
- `damage-late-noise`: the same noise only in the low-noise half of the schedule (a cache or
  kernel that goes wrong late, where a model that decides its image in the first step is blind).
- `damage-skip-steps`: a naive step cache; every 2nd denoiser call returns the previous output.
- `damage-gain`: a wrong scale after quantization; the noise prediction times 1.05.
- `damage-colour`: colour drift after compile; +0.03 (about 4 levels) on the decoded red channel.
- `damage-text`: lost prompt conditioning; 10% noise on the text embeddings the denoiser reads
  (text-conditioned models only: a class-conditional DiT has none, so it is n/a there).
- `damage-no-text`: dropped text conditioning; the pipeline is called with an empty prompt.
- `damage-no-guidance`: guidance forced off; the pipeline is called with guidance_scale = 1.
- `damage-full-strength`: an img2img `strength` ignored; called with strength = 1 (image-to-image
  models run below 1, so the input image shapes their result).
- `damage-scheduler`: a wrong scheduler; the pipeline's is swapped for another family's
  (Euler for DDIM and the others, DDIM for Euler, Heun for flow-matching Euler), same config.

Each is a `BackendSpec` (`apply(pipe, **options) -> pipe`) in their own registry, `DAMAGES`,
not among the accelerations; a config may still run one as a user backend
(`factory = "accelgate.backends.damage:gain"`). The hooks live on the case's own pipeline copy
and die with it.
"""
from __future__ import annotations

from typing import Any

import torch

from accelgate.backends.registry import BackendSpec
from accelgate.backends.torch_backends import denoiser_of
from accelgate.models.registry import ModelSpec
from accelgate.registry import Registry


def denoiser_module(pipe: Any) -> torch.nn.Module:
    """The denoiser module itself (`denoiser_of` gives its attribute name too)."""
    return denoiser_of(pipe)[1]


def first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    return output[0] if isinstance(output, tuple) else output.sample


def replace_first(output: Any, tensor: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return tensor
    if isinstance(output, tuple):
        return (tensor,) + tuple(output[1:])
    output.sample = tensor
    return output


def _seeded_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator).to(like.device, like.dtype)


def _is_late(pipe: Any, timestep: Any) -> bool:
    """The denoiser is called in the low-noise half of its schedule: `timestep` is below the
    middle of the scheduler's timesteps (read from the call, so every scheduler and strength works)."""
    schedule = getattr(pipe.scheduler, "timesteps", None)
    if timestep is None or schedule is None or len(schedule) == 0:
        raise TypeError(f"{type(pipe).__name__}: cannot tell early from late steps (no timestep in the denoiser call "
                        "or no scheduler timesteps)")
    t = float(torch.as_tensor(timestep).flatten()[0])
    schedule = torch.as_tensor(schedule).float()
    return t < float(schedule.max() + schedule.min()) / 2


def denoiser_noise(pipe: Any, sigma: float = 0.1, seed: int = 0, late_only: bool = False) -> Any:
    """Seeded Gaussian noise, `sigma` x the prediction's std, on the denoiser's output: at every
    step, or with `late_only` in the low-noise half of the schedule only."""
    generator = torch.Generator("cpu").manual_seed(seed)
    denoiser = denoiser_module(pipe)
    seen: dict[str, Any] = {}

    def remember(module, args, kwargs):
        seen["timestep"] = kwargs.get("timestep", args[1] if len(args) > 1 else None)

    def hook(module, args, output):
        if late_only and not _is_late(pipe, seen.get("timestep")):
            return output
        tensor = first_tensor(output)
        return replace_first(output, tensor + sigma * tensor.float().std().to(tensor.dtype)
                             * _seeded_noise(tensor, generator))

    denoiser.register_forward_pre_hook(remember, with_kwargs=True)
    denoiser.register_forward_hook(hook)
    return pipe


def skip_steps(pipe: Any, every: int = 2) -> Any:
    """Reuses the previous denoiser output on all but every `every`-th call: a naive cache."""
    state: dict[str, Any] = {"calls": 0, "last": None}

    def hook(module, args, output):
        state["calls"] += 1
        last = state["last"]
        if last is not None and state["calls"] % every != 1 and last.shape == first_tensor(output).shape:
            return replace_first(output, last)
        state["last"] = first_tensor(output).detach().clone()
        return output

    denoiser_module(pipe).register_forward_hook(hook)
    return pipe


def gain(pipe: Any, factor: float = 1.05) -> Any:
    """The noise prediction times `factor`: a wrong dequantization scale."""
    denoiser_module(pipe).register_forward_hook(
        lambda module, args, output: replace_first(output, first_tensor(output) * factor))
    return pipe


def color_cast(pipe: Any, shift: float = 0.03) -> Any:
    """Shifts the decoded image's red channel by `shift` (in [-1, 1] VAE units): colour drift."""

    def hook(module, args, output):
        tensor = first_tensor(output).clone()
        tensor[:, 0] += shift
        return replace_first(output, tensor)

    pipe.vae.decoder.register_forward_hook(hook)
    return pipe


def text_noise(pipe: Any, sigma: float = 0.1, seed: int = 0) -> Any:
    """Seeded noise, `sigma` x their std, on the text embeddings the denoiser is given."""
    generator = torch.Generator("cpu").manual_seed(seed)

    def hook(module, args, kwargs):
        states = kwargs.get("encoder_hidden_states")
        if states is None:
            raise TypeError(f"{type(module).__name__} was called without encoder_hidden_states: no text "
                            "conditioning to damage")
        kwargs["encoder_hidden_states"] = states + sigma * states.float().std().to(states.dtype) \
            * _seeded_noise(states, generator)
        return args, kwargs

    denoiser_module(pipe).register_forward_pre_hook(hook, with_kwargs=True)
    return pipe


def calling_with(pipe: Any, **overrides: Any) -> Any:
    """The pipeline, its class swapped for a same-named subclass whose `__call__` replaces some
    arguments: what a backend that rewrites (or ignores) a call argument does."""
    base = type(pipe)

    def __call__(self, *args, **kwargs):
        return base.__call__(self, *args, **{**kwargs, **overrides})

    pipe.__class__ = type(base.__name__, (base,), {"__call__": __call__, "__module__": base.__module__,
                                                   "__doc__": base.__doc__})
    return pipe


# Which scheduler class replaces which (another family, same config); the rest go to Euler.
_WRONG_SCHEDULER = {"EulerDiscreteScheduler": "DDIMScheduler",
                    "FlowMatchEulerDiscreteScheduler": "FlowMatchHeunDiscreteScheduler"}


def wrong_scheduler(pipe: Any) -> Any:
    """The pipeline's scheduler replaced by another family's, built from the same config."""
    import diffusers

    current = type(pipe.scheduler).__name__
    replacement = getattr(diffusers, _WRONG_SCHEDULER.get(current, "EulerDiscreteScheduler"))
    pipe.scheduler = replacement.from_config(pipe.scheduler.config)
    return pipe


def _text_conditioned(model: ModelSpec) -> str | None:
    return "needs text conditioning (a class-conditional model has none)" if model.task == "class-conditional" else None


def _guided(model: ModelSpec) -> str | None:
    return None if (model.guidance_scale or 0) > 1 else f"needs guidance (the model runs at guidance_scale {model.guidance_scale})"


def _image_to_image(model: ModelSpec) -> str | None:
    return None if model.task == "image-to-image" else f"needs an image-to-image model with a strength (task {model.task})"


DAMAGES: Registry[BackendSpec] = Registry("damage")
for _spec in (
    BackendSpec("damage-noise", denoiser_noise, "10% Gaussian noise on the denoiser output, every step",
                {"sigma": 0.1, "seed": 0}, lossy=True),
    BackendSpec("damage-late-noise", denoiser_noise, "10% Gaussian noise on the denoiser output, low-noise half only",
                {"sigma": 0.1, "seed": 0, "late_only": True}, lossy=True),
    BackendSpec("damage-skip-steps", skip_steps, "every 2nd denoiser call returns the previous output",
                {"every": 2}, lossy=True),
    BackendSpec("damage-gain", gain, "the noise prediction times 1.05", {"factor": 1.05}, lossy=True),
    BackendSpec("damage-colour", color_cast, "+0.03 (about 4 levels) on the decoded red channel",
                {"shift": 0.03}, lossy=True),
    BackendSpec("damage-text", text_noise, "10% Gaussian noise on the text embeddings", {"sigma": 0.1, "seed": 0},
                lossy=True, serves=_text_conditioned),
    BackendSpec("damage-no-text", calling_with, "called with an empty prompt", {"prompt": ""}, lossy=True,
                serves=_text_conditioned),
    BackendSpec("damage-no-guidance", calling_with, "called with guidance_scale 1 (guidance off)",
                {"guidance_scale": 1.0}, lossy=True, serves=_guided),
    BackendSpec("damage-full-strength", calling_with, "called with strength 1 (the input image ignored)",
                {"strength": 1.0}, lossy=True, serves=_image_to_image),
    # no option: the class swap is the damage, named in the description
    BackendSpec("damage-scheduler", wrong_scheduler, "Euler for the model's scheduler (DDIM for Euler, Heun for "
                "flow-matching Euler), same config", lossy=True),
):
    DAMAGES.register(_spec.name, _spec)
