"""OneDiff (siliconflow/onediff) compilers: CUDA only, never installed in the CPU test env.

Both backends go through `onediffx.compile_pipe`, the entry point OneDiff documents for
diffusers pipelines. On a CPU machine they are skipped with a reason that says what to
install (`BackendSpec.skip_reason` from `needs_cuda` and `packages`), never attempted:
`import onediffx` works without oneflow/nexfort, but `compile_pipe` then fails deep inside
with `No module named 'oneflow'` / `'nexfort'`.

Two behaviours of `compile_pipe` matter for a regression gate:

- It silently calls `pipe.upcast_vae()` when the VAE is float16 and its config says
  `force_upcast` (SD/SDXL VAEs in fp16). The OneDiff image is then decoded by a float32 VAE;
  an fp16 eager baseline decoded in fp16 differs (or is NaN/black) for a reason that is not
  the compiler's. The baseline for a fp16 OneDiff case must be made with the VAE upcast too.
- With `backend="nexfort"` and `options["memory_format"]` it converts the pipeline to that
  memory format and *deletes the key from the dict it was given*; each call here passes a
  fresh dict so the registered defaults are never mutated.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from accelgate.registry import frozen_mapping
from accelgate.backends.registry import BackendSpec, Requirement, register

ONEDIFFX = Requirement("onediffx", "pip install --pre onediff onediffx")
ONEFLOW = Requirement(
    "oneflow",
    "pip install -U --pre oneflow -f "
    "https://github.com/siliconflow/oneflow_releases/releases/expanded_assets/community_cu122"
    " (pick the community_cuXXX index matching your CUDA)",
)
NEXFORT = Requirement(
    "nexfort",
    "pip install -U nexfort, in a dedicated GPU environment: nexfort pins an old torch (0.1.dev330 needs torch<=2.5.1)"
    " and drops top-level .so files (one named triton) into site-packages",
)

# OneDiff's benchmarks/text_to_image.py default until onediff#986; later versions of that
# script use "max-optimize:max-autotune:low-precision", which trades accuracy for speed on
# purpose. A numerical regression gate starts from the mode that does not.
NEXFORT_DEFAULT_OPTIONS = '{"mode": "max-optimize:max-autotune:freezing", "memory_format": "channels_last"}'


def _t5_text_encoder(pipe: Any) -> bool:
    encoder = getattr(pipe, "text_encoder", None)
    return encoder is not None and type(encoder).__name__.startswith("T5")


def apply_onediff_oneflow(pipe: Any, *, ignores: tuple[str, ...] | list[str] = ()) -> Any:
    """`onediffx.compile_pipe(pipe)` with the OneFlow backend.

    OneDiff's own benchmark notes that the OneFlow `compile_pipe` is incompatible with
    `T5EncoderModel`; a T5 `text_encoder` (PixArt) is therefore added to `ignores`. The text
    encoder runs once per image, so leaving it in PyTorch costs nothing measurable.
    """
    from onediffx import compile_pipe

    skip = tuple(ignores)
    if _t5_text_encoder(pipe) and "text_encoder" not in skip:
        skip += ("text_encoder",)
    return compile_pipe(pipe, ignores=skip)


def _options_dict(options: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(options, str):
        try:
            parsed = json.loads(options)
        except json.JSONDecodeError as exc:
            raise ValueError(f"onediff-nexfort: options is not valid JSON ({exc}): {options!r}") from None
    else:
        parsed = json.loads(json.dumps(dict(options)))  # deep copy: compile_pipe mutates it
    if not isinstance(parsed, dict):
        raise ValueError(f"onediff-nexfort: options must be a JSON object or a table, got {options!r}")
    return parsed


def apply_onediff_nexfort(
    pipe: Any,
    *,
    options: str | Mapping[str, Any] = NEXFORT_DEFAULT_OPTIONS,
    quantize: Mapping[str, Any] | None = None,
) -> Any:
    """`onediffx.compile_pipe(pipe, backend="nexfort", options=..., fuse_qkv_projections=True)`.

    As in OneDiff's benchmark script: optional `quantize_pipe(pipe, ignores=[], **quantize)`
    first (e.g. `{"quant_type": "fp8_e4m3_e4m3_dynamic"}`), then compile with fused QKV
    projections. The default mode has no low-precision or quantization, so it is held to the
    strict default tolerance; a `quantize` config is lossy and needs an explicit, reasoned
    one. Note (see module docstring) that `compile_pipe` upcasts an fp16 VAE with
    `force_upcast` to float32 without saying so: the baseline must match that.
    """
    from onediffx import compile_pipe, quantize_pipe

    compile_options = _options_dict(options)
    if quantize is not None:
        if not isinstance(quantize, Mapping):
            raise ValueError(
                f"onediff-nexfort: quantize must be a table of quantize_pipe arguments or absent, got {quantize!r}"
            )
        pipe = quantize_pipe(pipe, ignores=[], **dict(quantize))
    return compile_pipe(pipe, backend="nexfort", options=compile_options, fuse_qkv_projections=True)


register(
    BackendSpec(
        name="onediff-oneflow",
        apply=apply_onediff_oneflow,
        description="OneDiff compile_pipe with the OneFlow backend (CUDA)",
        options=frozen_mapping({"ignores": ()}),
        needs_cuda=True,
        packages=(ONEDIFFX, ONEFLOW),
        changes_numerics=True,
        compiles=True,
    )
)
register(
    BackendSpec(
        name="onediff-nexfort",
        apply=apply_onediff_nexfort,
        description="OneDiff compile_pipe with the nexfort backend, fused QKV, optional quantize_pipe (CUDA)",
        options=frozen_mapping({"options": NEXFORT_DEFAULT_OPTIONS, "quantize": None}),
        needs_cuda=True,
        packages=(ONEDIFFX, NEXFORT),
        changes_numerics=True,
        compiles=True,
    )
)
