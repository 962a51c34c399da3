"""Feature caching and token merging: they skip work between steps, so they are stateful.

State is the trap here. A cache that survives from one generation into the next makes the
second image depend on the first, and the suite would blame the backend for a difference
that is really test order. Every backend in this module therefore declares a `call_context`
that resets its state around each pipeline call, so two calls with the same seed give the
same image (the unit tests check exactly that).

- `deepcache` (DeepCache's `DeepCacheSDHelper`) and `tomesd` work on UNets only.
- `first-block-cache`, `pyramid-attention-broadcast`, `taylorseer` are diffusers hooks
  attached with `diffusers.hooks.apply_*`. They keep per-context state in a `StateManager`
  that only works inside a *cache context*, which diffusers' newer pipelines open with
  `denoiser.cache_context("cond")`. The SD, SDXL, PixArt and DiT pipelines never do, and
  their denoisers lack `CacheMixin` (no `cache_context`/`enable_cache`), so the context is
  set here with diffusers' own `hooks.hooks._set_cache_context`, once per denoiser call,
  with the step index and timestep filled in.
- `pyramid-attention-broadcast` and `taylorseer` serve UNets too (their attention layers sit
  under `...transformer_blocks.N.attn1/2`); `first-block-cache` needs top-level blocks.
- FasterCache is left out: on diffusers 0.42.1 it errors on SD/SDXL (chunk error) and DiT
  (size error) and is at SSIM 0.81 on PixArt (measured, see shared/FACTS.md).
"""
from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Any, Callable, Iterator

from accelgate.backends.registry import BackendSpec, Requirement, register
from accelgate.backends.torch_backends import denoiser_of
from accelgate.models.registry import ModelSpec
from accelgate.registry import frozen_mapping

if TYPE_CHECKING:  # torch is imported when a case applies a backend, not at import
    import torch

CONTEXT_NAME = "accelgate"  # CFG runs cond and uncond in one batched call: one context is enough
_DRIVER_ATTR = "_accelgate_cache_driver"
_DEEPCACHE_ATTR = "_accelgate_deepcache"


def _unet_only(what: str) -> Callable[[ModelSpec], str | None]:
    def serves(model: ModelSpec) -> str | None:
        if model.denoiser == "unet":
            return None
        return f"needs a UNet ({what}); {model.id} has a {model.denoiser}"

    return serves


def _transformer_only(why: str) -> Callable[[ModelSpec], str | None]:
    def serves(model: ModelSpec) -> str | None:
        if model.denoiser == "transformer":
            return None
        return f"not for UNets ({why})"

    return serves


# ------------------------------------------------------------------------------------ DeepCache


def apply_deepcache(pipe: Any, *, cache_interval: int = 3, cache_branch_id: int = 0) -> Any:
    """DeepCache: recompute the UNet's deep features every `cache_interval` steps only.

    The helper wraps the UNet's block forwards and reads the step from the UNet's positional
    timestep argument (all SD-family pipelines pass it positionally).
    """
    from DeepCache import DeepCacheSDHelper

    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=cache_interval, cache_branch_id=cache_branch_id)
    helper.enable()
    setattr(pipe, _DEEPCACHE_ATTR, helper)
    return pipe


@contextlib.contextmanager
def deepcache_context(pipe: Any) -> Iterator[None]:
    """Forget cached features and the start step before and after each generation.

    `DeepCacheSDHelper` never resets them by itself: `start_timestep` stays at the first
    step index it ever saw, so an img2img call with another `strength` would skip on the
    wrong steps, and cached features from a previous resolution would be reused. Its own
    `reset_states()` also drops the wrapped forwards, so only the per-run fields are reset.
    """
    helper = getattr(pipe, _DEEPCACHE_ATTR, None)
    if helper is None:
        raise RuntimeError("deepcache: call_context on a pipeline that apply_deepcache did not prepare")

    def reset() -> None:
        helper.cur_timestep = 0
        helper.start_timestep = None
        helper.cached_output = {}

    reset()
    try:
        yield
    finally:
        reset()


# ---------------------------------------------------------------------------------------- tomesd


def apply_tomesd(pipe: Any, *, ratio: float = 0.5, max_downsample: int = 2, use_rand: bool = False) -> Any:
    """Token Merging for Stable Diffusion on the UNet's self-attention.

    Defaults differ from tomesd's on purpose (measured on the tiny UNets): its default
    `max_downsample=1` only touches layers at full latent resolution, which a two-level tiny
    UNet's attention blocks are not, so it would be a silent no-op; its default
    `use_rand=True` draws random merge partitions, so two runs with the same seed differ.
    """
    import tomesd

    tomesd.apply_patch(pipe, ratio=ratio, max_downsample=max_downsample, use_rand=use_rand)
    return pipe


# ---------------------------------------------------------------------- diffusers cache hooks


class _CacheDriver:
    """Opens diffusers' cache context around the denoiser and tracks where the loop is.

    A forward pre-hook on the denoiser counts calls and records the timestep argument, then
    sets the cache context (name, step index, timestep) on every stateful hook below it. The
    timestep also feeds Pyramid Attention Broadcast's `current_timestep_callback`, which
    SD/PixArt/DiT pipelines have no `current_timestep` property to answer.
    """

    def __init__(self, denoiser: torch.nn.Module) -> None:
        self.denoiser = denoiser
        self.signature = inspect.signature(type(denoiser).forward)
        self.step = -1
        self.timestep: float | None = None
        self.active = False
        denoiser.register_forward_pre_hook(self._before_forward, with_kwargs=True)

    def current_timestep(self) -> float:
        if self.timestep is None:
            raise RuntimeError("cache hook asked for the timestep before the denoiser was called")
        return self.timestep

    def _timestep_of(self, args: tuple, kwargs: dict) -> float | None:
        try:
            value = self.signature.bind_partial(self.denoiser, *args, **kwargs).arguments.get("timestep")
        except TypeError:
            return None
        import torch

        if isinstance(value, torch.Tensor):
            return float(value.flatten()[0]) if value.numel() else None
        return None if value is None else float(value)

    def _before_forward(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        from diffusers.hooks.hooks import CacheContext, _set_cache_context

        if not self.active:
            raise RuntimeError(
                f"{type(module).__name__} carries accelgate cache hooks but was called outside the "
                "backend's call_context; wrap every pipeline call in `spec.call_context(pipe)` so the "
                "hook state is reset per generation"
            )
        self.step += 1
        self.timestep = self._timestep_of(args, kwargs)
        _set_cache_context(module, CacheContext(CONTEXT_NAME, step_index=self.step, timestep=self.timestep))

    @contextlib.contextmanager
    def generation(self) -> Iterator[None]:
        from diffusers.hooks import HookRegistry
        from diffusers.hooks.hooks import _set_cache_context

        registry = HookRegistry.check_if_exists_or_initialize(self.denoiser)

        def reset() -> None:
            registry.reset_stateful_hooks()
            _set_cache_context(self.denoiser, None)
            self.step, self.timestep = -1, None

        reset()
        self.active = True
        try:
            yield
        finally:
            self.active = False
            reset()


def _attach(
    pipe: Any, backend: str, hook_name: str, apply_hooks: Callable[[torch.nn.Module, _CacheDriver], None]
) -> Any:
    """Install a driver and the hooks; refuse a pipeline on which they attach to nothing."""
    from diffusers.hooks import HookRegistry

    attr, denoiser = denoiser_of(pipe)
    driver = _CacheDriver(denoiser)
    apply_hooks(denoiser, driver)
    registry = HookRegistry.check_if_exists_or_initialize(denoiser)
    registry.invalidate_child_registries_cache()
    hooked = [m for m in denoiser.modules() if hook_name in getattr(getattr(m, "_diffusers_hook", None), "hooks", {})]
    if not hooked:
        raise ValueError(
            f"{backend}: no module of {attr} {type(denoiser).__name__} matched the hook's block identifiers, "
            "so it would run unchanged; pass identifiers that match this model in the backend options, "
            "or leave this model out"
        )
    setattr(denoiser, _DRIVER_ATTR, driver)
    return pipe


@contextlib.contextmanager
def hook_context(pipe: Any) -> Iterator[None]:
    """Entered around every pipeline call for the diffusers cache-hook backends."""
    attr, denoiser = denoiser_of(pipe)
    driver = getattr(denoiser, _DRIVER_ATTR, None)
    if driver is None:
        raise RuntimeError(f"cache hooks: call_context on a pipeline whose {attr} has no accelgate cache driver")
    with driver.generation():
        yield


def apply_first_block_cache(pipe: Any, *, threshold: float = 0.2) -> Any:
    """FirstBlockCache: skip the remaining transformer blocks when block 0's residual barely moves."""
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache as apply_fbc
    from diffusers.hooks.first_block_cache import _FBC_LEADER_BLOCK_HOOK

    return _attach(pipe, "first-block-cache", _FBC_LEADER_BLOCK_HOOK,
                   lambda den, _: apply_fbc(den, FirstBlockCacheConfig(threshold=threshold)))


def apply_pyramid_attention_broadcast(
    pipe: Any,
    *,
    spatial_attention_block_skip_range: int = 2,
    spatial_attention_timestep_skip_range: tuple[int, int] | list[int] = (100, 800),
    cross_attention_block_skip_range: int | None = None,
    cross_attention_timestep_skip_range: tuple[int, int] | list[int] = (100, 800),
) -> Any:
    """Pyramid Attention Broadcast: reuse attention outputs for steps inside a timestep window.

    Ranges arrive as lists from TOML and are made tuples, the type diffusers declares.
    """
    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast as apply_pab
    from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK

    def hooks(denoiser: torch.nn.Module, driver: _CacheDriver) -> None:
        config = PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=spatial_attention_block_skip_range,
            spatial_attention_timestep_skip_range=tuple(spatial_attention_timestep_skip_range),
            cross_attention_block_skip_range=cross_attention_block_skip_range,
            cross_attention_timestep_skip_range=tuple(cross_attention_timestep_skip_range),
            current_timestep_callback=driver.current_timestep,
        )
        apply_pab(denoiser, config)

    return _attach(pipe, "pyramid-attention-broadcast", _PYRAMID_ATTENTION_BROADCAST_HOOK, hooks)


# diffusers' default identifiers are `^transformer_blocks.*attn` etc. under `re.fullmatch`: they
# match Flux-style modules named `attn` only, so on PixArt/DiT (`attn1`, `attn2`) and on UNets
# (blocks nested under `down_blocks...`) TaylorSeer would hook nothing. Same idea, generalized
# to numbered attention modules and to transformer blocks at any depth:
TAYLORSEER_IDENTIFIERS = (r"(.*\.)?(single_|temporal_)?transformer_blocks\.\d+\.attn\d?",)


def apply_taylorseer(
    pipe: Any,
    *,
    cache_interval: int = 3,
    disable_cache_before_step: int = 3,
    max_order: int = 1,
    taylor_factors_dtype: str = "bfloat16",
    cache_identifiers: tuple[str, ...] | list[str] = TAYLORSEER_IDENTIFIERS,
) -> Any:
    """TaylorSeer: predict attention outputs from a Taylor expansion between full steps.

    Steps before `disable_cache_before_step` are computed, then one in `cache_interval`:
    with 5 steps and the defaults only step 3 is predicted. Hooked modules are the attention
    layers matched by `cache_identifiers` (see TAYLORSEER_IDENTIFIERS for why not diffusers'
    defaults); on the tiny UNets the images stay within 1 uint8 level of eager although 20%
    of the attention calls are predicted, on DiT the error is large (SSIM 0.31 at 10 steps).
    """
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache
    from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

    import torch

    dtype = getattr(torch, taylor_factors_dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(
            f"taylorseer: taylor_factors_dtype={taylor_factors_dtype!r} is not a torch dtype name "
            "(e.g. 'bfloat16', 'float32')"
        )
    config = TaylorSeerCacheConfig(
        cache_interval=cache_interval,
        disable_cache_before_step=disable_cache_before_step,
        max_order=max_order,
        taylor_factors_dtype=dtype,
        cache_identifiers=list(cache_identifiers),
    )
    return _attach(pipe, "taylorseer", _TAYLORSEER_CACHE_HOOK, lambda den, _: apply_taylorseer_cache(den, config))


register(
    BackendSpec(
        name="deepcache",
        apply=apply_deepcache,
        description="DeepCache: reuse deep UNet features between steps",
        options=frozen_mapping({"cache_interval": 3, "cache_branch_id": 0}),
        packages=(Requirement("DeepCache", "pip install DeepCache"),),
        serves=_unet_only("DeepCache caches the UNet's up/down block features"),
        call_context=deepcache_context,
        lossy=True,
        changes_numerics=True,
        skips_work=True,
    )
)
register(
    BackendSpec(
        name="tomesd",
        apply=apply_tomesd,
        description="Token Merging for SD on the UNet's self-attention",
        options=frozen_mapping({"ratio": 0.5, "max_downsample": 2, "use_rand": False}),
        packages=(Requirement("tomesd", "pip install tomesd"),),
        serves=_unet_only("tomesd patches the SD UNet's transformer blocks"),
        lossy=True,
        changes_numerics=True,
    )
)
register(
    BackendSpec(
        name="first-block-cache",
        apply=apply_first_block_cache,
        description="diffusers FirstBlockCache (threshold 0.2)",
        options=frozen_mapping({"threshold": 0.2}),
        serves=_transformer_only(
            "FirstBlockCache looks for a top-level list of transformer blocks; a UNet has none and diffusers "
            "raises IndexError"
        ),
        call_context=hook_context,
        lossy=True,
        changes_numerics=True,
        skips_work=True,
    )
)
register(
    BackendSpec(
        name="pyramid-attention-broadcast",
        apply=apply_pyramid_attention_broadcast,
        description="diffusers Pyramid Attention Broadcast (spatial attention, skip range 2, t in 100..800)",
        options=frozen_mapping({
            "spatial_attention_block_skip_range": 2,
            "spatial_attention_timestep_skip_range": (100, 800),
            "cross_attention_block_skip_range": None,
            "cross_attention_timestep_skip_range": (100, 800),
        }),
        call_context=hook_context,
        lossy=True,
        changes_numerics=True,
        skips_work=True,
    )
)
register(
    BackendSpec(
        name="taylorseer",
        apply=apply_taylorseer,
        description="diffusers TaylorSeer cache (interval 3)",
        options=frozen_mapping({
            "cache_interval": 3,
            "disable_cache_before_step": 3,
            "max_order": 1,
            "taylor_factors_dtype": "bfloat16",
            "cache_identifiers": TAYLORSEER_IDENTIFIERS,
        }),
        call_context=hook_context,
        lossy=True,
        changes_numerics=True,
        skips_work=True,
    )
)
