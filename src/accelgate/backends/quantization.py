"""Weight quantization of the denoiser: lossy by design, so each needs a measured tolerance.

Only the denoiser is quantized: it holds most of the parameters and runs once per step; the
text encoders and the VAE stay in the pipeline dtype so a difference is attributable to the
denoiser's weights alone.
"""
from __future__ import annotations

from typing import Any

from accelgate.registry import frozen_mapping
from accelgate.backends.registry import BackendSpec, Requirement, register
from accelgate.backends.torch_backends import denoiser_of

_FLOAT8 = ("float8_e4m3fn", "float8_e5m2")  # torch dtype names (torch is imported when a case applies)


def apply_fp8_layerwise(pipe: Any, *, storage_dtype: str = "float8_e4m3fn") -> Any:
    """Store the denoiser's weights in float8, upcast layer by layer to compute.

    diffusers' `enable_layerwise_casting`: weights live in `storage_dtype` and each layer
    casts them to the pipeline's dtype just before its forward, so memory drops while the
    math stays in float32/bf16. The error is the float8 rounding of the weights. diffusers
    skips the layers it knows are sensitive (patch embeddings, norms) by default; those
    defaults are kept, since they are what a user of the API gets.
    """
    import torch

    if storage_dtype not in _FLOAT8:
        raise ValueError(
            f"fp8-layerwise: storage_dtype={storage_dtype!r} is not supported; use one of {', '.join(_FLOAT8)}"
        )
    storage = getattr(torch, storage_dtype)
    _, denoiser = denoiser_of(pipe)
    denoiser.enable_layerwise_casting(storage_dtype=storage, compute_dtype=denoiser.dtype)
    return pipe


def apply_torchao_int8(pipe: Any, *, group_size: int | None = None) -> Any:
    """torchao int8 weight-only quantization of the denoiser's Linear layers.

    torchao's `set_inductor_config=True` default rewrites global `torch._inductor.config`
    flags as a side effect; in a suite that runs many cases in one process that would leak
    into a later torch-compile case, so it is turned off here. Convolutions are not
    quantized (torchao's default filter takes Linear layers only), so on UNets the effect is
    limited to the attention and feed-forward projections.
    """
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    _, denoiser = denoiser_of(pipe)
    quantize_(denoiser, Int8WeightOnlyConfig(group_size=group_size, set_inductor_config=False))
    return pipe


register(
    BackendSpec(
        name="fp8-layerwise",
        apply=apply_fp8_layerwise,
        description="denoiser weights stored in float8_e4m3fn, computed in the pipeline dtype",
        options=frozen_mapping({"storage_dtype": "float8_e4m3fn"}),
        lossy=True,
        changes_numerics=True,
    )
)
register(
    BackendSpec(
        name="torchao-int8",
        apply=apply_torchao_int8,
        description="torchao int8 weight-only quantization of the denoiser's Linear layers",
        options=frozen_mapping({"group_size": None}),
        packages=(Requirement("torchao", "pip install torchao"),),
        lossy=True,
        changes_numerics=True,
    )
)
