"""Backends built from plain PyTorch / diffusers calls: the eager reference and the cheap wins.

`eager` is the reference every other backend is compared with, so it must leave the pipeline
exactly as loaded. The others change one thing each, so a regression points at one cause:

- `torch-compile`: inductor on the denoiser only (the VAE and text encoders run once per
  image; the denoiser runs once per step and is where a compiler bug would show).
- `channels-last`: NHWC memory format for the convolution-heavy parts (denoiser and VAE).
- `fuse-qkv`: one matmul for q/k/v (self-attention) and k/v (cross-attention).
- `bf16`: the whole pipeline in half precision; bfloat16 on CPU (CPU float16 kernels are
  slow or missing), float16 on CUDA, the dtype people actually ship on GPUs.

Shared helpers for the other backend modules (`denoiser_of`, `pipeline_class_of`,
`denoiser_class_of`) live here because every family needs them.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from accelgate.backends.registry import BackendSpec, register
from accelgate.models.registry import ModelSpec
from accelgate.registry import frozen_mapping

if TYPE_CHECKING:  # torch is imported by the functions that apply a backend, not at import
    import torch

DENOISER_ATTRS = ("unet", "transformer")


def denoiser_of(pipe: Any) -> tuple[str, torch.nn.Module]:
    """The pipeline attribute holding the denoiser (`unet` or `transformer`) and the module."""
    for attr in DENOISER_ATTRS:
        module = getattr(pipe, attr, None)
        if module is not None:
            return attr, module
    raise TypeError(
        f"{type(pipe).__name__} has neither a `unet` nor a `transformer`; accelgate backends act on "
        "the denoiser, so this pipeline cannot be accelerated by them"
    )


def pipeline_class_of(model: ModelSpec) -> type | None:
    """The diffusers pipeline class a model spec names, or None when diffusers lacks it."""
    import diffusers

    return getattr(diffusers, model.pipeline_class, None)


def denoiser_class_of(model: ModelSpec) -> type | None:
    """The denoiser class the model's pipeline declares in its `__init__` signature.

    `serves` only sees the spec, not a loaded pipeline; the constructor annotation
    (`unet: UNet2DConditionModel`, `transformer: DiTTransformer2DModel`) is how diffusers
    itself documents which class goes there, so it answers "does this denoiser have X".
    """
    cls = pipeline_class_of(model)
    if cls is None:
        return None
    param = inspect.signature(cls.__init__).parameters.get(model.denoiser)
    annotation = getattr(param, "annotation", None)
    return annotation if isinstance(annotation, type) else None


# ---------------------------------------------------------------------------------------- eager


def apply_eager(pipe: Any) -> Any:
    """The reference: the pipeline exactly as loaded."""
    return pipe


# -------------------------------------------------------------------------------- torch.compile


def apply_torch_compile(
    pipe: Any, *, mode: str = "default", dynamic: bool = False, fullgraph: bool = False, backend: str = "inductor"
) -> Any:
    """Compile the denoiser in place with `torch.compile`.

    `dynamic=False` by default: one graph per shape. With dynamic=None, torch marks the shape
    dynamic on the second resolution it sees and recompiles the whole UNet symbolically (85 s
    on CPU, measured), which would be billed to whatever case happens to run second.
    `nn.Module.compile` keeps the module object, so the pipeline's `isinstance` checks,
    `.config` and `.dtype` still work; compilation happens lazily on the first call, so the
    first generation of a case carries the compile time (timing code should warm up).
    """
    _, denoiser = denoiser_of(pipe)
    denoiser.compile(mode=mode, dynamic=dynamic, fullgraph=fullgraph, backend=backend)
    return pipe


# -------------------------------------------------------------------------------- channels-last


def apply_channels_last(pipe: Any) -> Any:
    """Put the denoiser and the VAE in `torch.channels_last` (NHWC) memory format.

    Only the layout of 4-D weights changes, not their values, so the output must match eager
    within float rounding; a difference beyond that is a kernel bug, which is what this
    backend is here to catch.
    """
    import torch

    _, denoiser = denoiser_of(pipe)
    denoiser.to(memory_format=torch.channels_last)
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        vae.to(memory_format=torch.channels_last)
    return pipe


# ------------------------------------------------------------------------------------- fuse-qkv


def _fuse_qkv_serves(model: ModelSpec) -> str | None:
    if hasattr(pipeline_class_of(model), "fuse_qkv_projections"):
        return None
    if hasattr(denoiser_class_of(model), "fuse_qkv_projections"):
        return None
    return f"neither {model.pipeline_class} nor its {model.denoiser} has fuse_qkv_projections()"


def apply_fuse_qkv(pipe: Any) -> Any:
    """Fuse the attention projections.

    The pipeline method (SD, SDXL, ...) fuses UNet and VAE and installs
    `FusedAttnProcessor2_0`, which is what makes the fused weights actually used. Pipelines
    without it (PixArt) get the denoiser's `AttentionMixin.fuse_qkv_projections()`, whose
    attention modules switch to the fused projection themselves.
    """
    if hasattr(pipe, "fuse_qkv_projections"):
        pipe.fuse_qkv_projections()
        return pipe
    attr, denoiser = denoiser_of(pipe)
    if not hasattr(denoiser, "fuse_qkv_projections"):
        raise TypeError(
            f"fuse-qkv: {type(pipe).__name__} and its {attr} {type(denoiser).__name__} have no "
            "fuse_qkv_projections(); this combination should have been reported n/a by serves()"
        )
    denoiser.fuse_qkv_projections()
    return pipe


# ----------------------------------------------------------------------------------------- bf16


def half_dtype_for(device: torch.device) -> torch.dtype:
    """float16 on CUDA (what GPU deployments use), bfloat16 elsewhere (CPU has fast bf16)."""
    import torch

    return torch.float16 if device.type == "cuda" else torch.bfloat16


def apply_bf16(pipe: Any) -> Any:
    """Cast the whole pipeline to half precision: bfloat16 on CPU, float16 on CUDA.

    Deliberately no VAE upcast: SD-family VAEs overflow in float16 and decode to NaN/black
    images. That is a real failure of this configuration, and the suite's degenerate-output
    guard is what must report it; fixing it here would hide exactly what the gate is for.
    """
    pipe.to(dtype=half_dtype_for(pipe.device))
    return pipe


register(BackendSpec(name="eager", apply=apply_eager, description="plain diffusers, eager PyTorch: the reference"))
register(
    BackendSpec(
        name="torch-compile",
        apply=apply_torch_compile,
        description="torch.compile on the denoiser (inductor, one graph per shape)",
        options=frozen_mapping({"mode": "default", "dynamic": False, "fullgraph": False, "backend": "inductor"}),
        changes_numerics=True,
        compiles=True,
    )
)
register(
    BackendSpec(
        name="channels-last",
        apply=apply_channels_last,
        description="channels_last memory format for the denoiser and the VAE",
    )
)
register(
    BackendSpec(
        name="fuse-qkv",
        apply=apply_fuse_qkv,
        description="fused q/k/v attention projections",
        serves=_fuse_qkv_serves,
    )
)
register(
    BackendSpec(
        name="bf16",
        apply=apply_bf16,
        description="whole pipeline in bfloat16 (CPU) / float16 (CUDA), no VAE upcast",
        lossy=True,
        changes_numerics=True,
    )
)
