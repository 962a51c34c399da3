"""The backend axis on the six tiny pipelines: each backend applies, makes images, keeps its promises.

Promises checked: lossless backends match eager within 1 uint8 level; every backend gives
the same image twice in a row (stateful caches are reset by their call_context); the n/a
declarations (`serves`) are exactly the combinations measured broken, and those really are
broken; CUDA-only backends skip with a reason that says what to install; user factories
fail with messages that say what to fix. Images are 32x32, 4 steps, one thread.
"""
from __future__ import annotations

import copy
import sys
import types

import numpy as np
import pytest
import torch

import accelgate.backends  # noqa: F401  (registers the built-ins)
import accelgate.models.catalog  # noqa: F401  (registers the tiny models)
from accelgate.backends import BACKENDS, Requirement, get_backend, resolve_factory, user_backend
from accelgate.backends.onediff import NEXFORT_DEFAULT_OPTIONS
from accelgate.models.loading import load_pipeline, prepare_resolution
from accelgate.models.registry import get_model

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = ("tiny-sd", "tiny-sdxl", "tiny-sd-img2img", "tiny-pix2pix", "tiny-pixart", "tiny-dit")
UNET_MODELS = MODELS[:4]
TRANSFORMER_MODELS = MODELS[4:]
SIZE, STEPS = 32, 4
CUDA_ONLY = ("onediff-oneflow", "onediff-nexfort")
SLOW = ("torch-compile",)  # cold inductor compile: 30-55 s on CPU; tested once, below
CPU_BACKENDS = tuple(name for name, spec in BACKENDS.items() if name not in CUDA_ONLY + SLOW and not spec.user)
LOSSLESS = ("eager", "channels-last", "fuse-qkv")
VISIBLY_LOSSY = ("bf16", "fp8-layerwise", "deepcache")  # measured: tens of levels off eager on UNets

# Measured on diffusers 0.42.1 (see the n/a tests below for the errors themselves).
EXPECTED_NA = {
    ("fuse-qkv", "tiny-dit"),
    *(("deepcache", m) for m in TRANSFORMER_MODELS),
    *(("tomesd", m) for m in TRANSFORMER_MODELS),
    *(("first-block-cache", m) for m in UNET_MODELS),
}


_PRISTINE: dict[str, object] = {}


def fresh(model_id: str):
    """A freshly loaded pipeline (loaded once per session, then deep-copied: no shared state),
    prepared for SIZE before any backend touches it, as the session does (DiT: its transformer
    is rebuilt at that sample size)."""
    if model_id not in _PRISTINE:
        _PRISTINE[model_id] = load_pipeline(get_model(model_id), device="cpu")
    pipe = copy.deepcopy(_PRISTINE[model_id])
    prepare_resolution(pipe, get_model(model_id), SIZE, SIZE)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _input_image():
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def generate(pipe, model_id: str, spec=None, **overrides) -> np.ndarray:
    """One image, uint8 HxWx3, through the backend's call context like the runner does."""
    model = get_model(model_id)
    kwargs = {"num_inference_steps": STEPS, "generator": torch.Generator("cpu").manual_seed(0), "output_type": "np"}
    if model.task == "class-conditional":
        kwargs["class_labels"] = [1]
    else:
        kwargs["prompt"] = "a photo of a cat"
    if model.task in ("image-to-image", "edit"):
        kwargs["image"] = _input_image()
    elif model.task == "text-to-image":
        kwargs.update(height=SIZE, width=SIZE)
    if model.pipeline_class == "PixArtSigmaPipeline":
        kwargs.update(use_resolution_binning=False, clean_caption=False)
    kwargs.update(overrides)
    context = spec.call_context(pipe) if spec is not None else get_backend("eager").call_context(pipe)
    with context:
        images = pipe(**kwargs).images
    image = np.asarray(images[0], dtype=np.float32)
    assert image.shape == (SIZE, SIZE, 3), f"{model_id}: image of shape {image.shape}"
    assert np.all(np.isfinite(image)), f"{model_id}: NaN/Inf in the image"
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


_EAGER: dict[str, np.ndarray] = {}


def eager_image(model_id: str) -> np.ndarray:
    if model_id not in _EAGER:
        _EAGER[model_id] = generate(fresh(model_id), model_id)
    return _EAGER[model_id]


def max_level_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# ------------------------------------------------------------------------------- registry


def test_every_builtin_is_registered_once():
    expected = {
        "eager", "torch-compile", "channels-last", "fuse-qkv", "bf16", "fp8-layerwise", "torchao-int8",
        "deepcache", "tomesd", "first-block-cache", "pyramid-attention-broadcast", "taylorseer",
        "onediff-oneflow", "onediff-nexfort",
    }
    assert {name for name, spec in BACKENDS.items() if not spec.user} == expected
    assert next(iter(BACKENDS)) == "eager"  # the reference comes first in reports
    assert dict(get_backend("torch-compile").options) == {
        "mode": "default", "dynamic": False, "fullgraph": False, "backend": "inductor"}
    assert dict(get_backend("tomesd").options) == {"ratio": 0.5, "max_downsample": 2, "use_rand": False}
    assert dict(get_backend("deepcache").options) == {"cache_interval": 3, "cache_branch_id": 0}


def test_serves_declares_exactly_the_measured_na_combinations():
    na = {(b, m) for b in BACKENDS for m in MODELS if BACKENDS[b].serves(get_model(m)) is not None}
    assert na == EXPECTED_NA
    for backend, model in na:
        reason = BACKENDS[backend].serves(get_model(model))
        assert isinstance(reason, str) and len(reason) > 15, (backend, model, reason)
    assert "UNet" in get_backend("deepcache").serves(get_model("tiny-dit"))
    assert "UNet" in get_backend("first-block-cache").serves(get_model("tiny-sd"))


# ----------------------------------------------------------------- every served combination

SERVED = [(b, m) for b in CPU_BACKENDS for m in MODELS if (b, m) not in EXPECTED_NA]


@pytest.mark.parametrize(("backend", "model_id"), SERVED, ids=[f"{b}-{m}" for b, m in SERVED])
def test_backend_applies_and_is_deterministic(backend, model_id):
    spec = get_backend(backend)
    pipe = spec.apply(fresh(model_id), **dict(spec.options))
    first = generate(pipe, model_id, spec)
    second = generate(pipe, model_id, spec)
    assert np.array_equal(first, second), (
        f"{backend} on {model_id}: two calls with the same seed differ by up to "
        f"{max_level_diff(first, second)} levels; state leaks from one generation into the next"
    )
    assert float(np.ptp(first)) > 0, f"{backend} on {model_id}: constant image"
    reference = eager_image(model_id)
    if backend in LOSSLESS:
        assert max_level_diff(first, reference) <= 1, f"{backend} on {model_id} is lossless but differs from eager"
    if backend in VISIBLY_LOSSY and model_id in UNET_MODELS:
        assert not np.array_equal(first, reference), f"{backend} on {model_id} left the image unchanged: not applied?"


# ---------------------------------------------------------------- the n/a ones really break


@pytest.mark.parametrize("model_id", ("tiny-sd", "tiny-sdxl"))
def test_first_block_cache_on_a_unet_is_an_index_error_in_diffusers(model_id):
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    with pytest.raises(IndexError):  # no top-level transformer blocks: pop from an empty list
        apply_first_block_cache(fresh(model_id).unet, FirstBlockCacheConfig(threshold=0.2))


@pytest.mark.parametrize("backend", ("deepcache", "tomesd"))
def test_unet_only_caches_cannot_patch_a_transformer_pipeline(backend):
    spec = get_backend(backend)
    with pytest.raises(AttributeError):
        spec.apply(fresh("tiny-dit"), **dict(spec.options))


def test_fuse_qkv_is_missing_on_dit():
    pipe = fresh("tiny-dit")
    assert not hasattr(pipe, "fuse_qkv_projections") and not hasattr(pipe.transformer, "fuse_qkv_projections")


# ------------------------------------------------------------------ backend-specific promises


def test_bf16_casts_everything_and_does_not_upcast_the_vae():
    pipe = get_backend("bf16").apply(fresh("tiny-sd"))
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16


def test_fp8_layerwise_stores_float8_and_rejects_unknown_dtypes():
    pipe = get_backend("fp8-layerwise").apply(fresh("tiny-pixart"))
    assert pipe.transformer.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    with pytest.raises(ValueError, match="storage_dtype='int4'.*float8_e4m3fn"):
        get_backend("fp8-layerwise").apply(fresh("tiny-pixart"), storage_dtype="int4")


def test_torchao_int8_quantizes_linear_weights():
    pipe = get_backend("torchao-int8").apply(fresh("tiny-pixart"))
    assert type(pipe.transformer.transformer_blocks[0].attn1.to_q.weight).__name__ == "Int8Tensor"


def test_deepcache_resets_between_generations_of_different_strength():
    """An img2img call at another strength must not inherit the previous call's start step."""
    spec = get_backend("deepcache")
    fresh_pipe = spec.apply(fresh("tiny-sd-img2img"), **dict(spec.options))
    expected = generate(fresh_pipe, "tiny-sd-img2img", spec, strength=1.0)
    used = spec.apply(fresh("tiny-sd-img2img"), **dict(spec.options))
    generate(used, "tiny-sd-img2img", spec, strength=0.5)
    assert np.array_equal(generate(used, "tiny-sd-img2img", spec, strength=1.0), expected)


def test_cache_hooks_refuse_a_call_outside_their_call_context():
    spec = get_backend("pyramid-attention-broadcast")
    pipe = spec.apply(fresh("tiny-pixart"), **dict(spec.options))
    with pytest.raises(RuntimeError, match="outside the backend's call_context"):
        generate(pipe, "tiny-pixart", get_backend("eager"))


def test_taylorseer_with_identifiers_matching_nothing_is_refused():
    spec = get_backend("taylorseer")
    options = {**spec.options, "cache_identifiers": ["no_such_module"]}
    with pytest.raises(ValueError, match="taylorseer: no module of unet UNet2DConditionModel matched"):
        spec.apply(fresh("tiny-sd"), **options)


@pytest.mark.slow
def test_torch_compile_matches_eager_on_the_smallest_model():
    spec = get_backend("torch-compile")
    pipe = spec.apply(fresh("tiny-dit"), **dict(spec.options))
    assert pipe.transformer._compiled_call_impl is not None
    assert max_level_diff(generate(pipe, "tiny-dit", spec), eager_image("tiny-dit")) <= 1


# ------------------------------------------------------------------------------- OneDiff


@pytest.mark.parametrize("backend", CUDA_ONLY)
def test_onediff_skips_on_cpu_saying_it_needs_cuda(backend):
    reason = get_backend(backend).skip_reason("cpu")
    assert reason is not None and "CUDA" in reason and backend in reason


@pytest.mark.parametrize(("backend", "package", "pip_line"), [
    ("onediff-oneflow", "oneflow", "pip install -U --pre oneflow -f https://github.com/siliconflow/oneflow_releases"),
    ("onediff-nexfort", "nexfort", "pip install -U nexfort"),
    ("onediff-nexfort", "onediffx", "pip install --pre onediff onediffx"),
])
def test_onediff_on_cuda_without_its_packages_says_what_to_install(monkeypatch, backend, package, pip_line):
    monkeypatch.setattr(Requirement, "missing", lambda self: self.module == package)
    reason = get_backend(backend).skip_reason("cuda:0")
    assert reason is not None and package in reason and pip_line in reason


@pytest.fixture
def fake_onediffx(monkeypatch):
    """A stand-in onediffx recording its calls (the real one needs CUDA and oneflow/nexfort)."""
    calls = []
    module = types.ModuleType("onediffx")

    def compile_pipe(pipe, **kwargs):
        calls.append(("compile_pipe", copy.deepcopy(kwargs)))
        if isinstance(kwargs.get("options"), dict):
            kwargs["options"].pop("memory_format", None)  # as the real one does
        return pipe

    def quantize_pipe(pipe, **kwargs):
        calls.append(("quantize_pipe", dict(kwargs)))
        return pipe

    module.compile_pipe, module.quantize_pipe = compile_pipe, quantize_pipe
    monkeypatch.setitem(sys.modules, "onediffx", module)
    return calls


def test_nexfort_compiles_with_fused_qkv_and_never_mutates_its_defaults(fake_onediffx):
    spec = get_backend("onediff-nexfort")
    for _ in range(2):
        spec.apply(object(), **dict(spec.options))
    assert [name for name, _ in fake_onediffx] == ["compile_pipe", "compile_pipe"]
    for _, kwargs in fake_onediffx:
        assert kwargs["backend"] == "nexfort" and kwargs["fuse_qkv_projections"] is True
        assert kwargs["options"] == {"mode": "max-optimize:max-autotune:freezing", "memory_format": "channels_last"}
    assert spec.options["options"] == NEXFORT_DEFAULT_OPTIONS


def test_nexfort_quantizes_before_compiling_when_asked(fake_onediffx):
    spec = get_backend("onediff-nexfort").with_options({"quantize": {"quant_type": "fp8_e4m3_e4m3_dynamic"}})
    spec.apply(object(), **dict(spec.options))
    assert fake_onediffx[0] == ("quantize_pipe", {"ignores": [], "quant_type": "fp8_e4m3_e4m3_dynamic"})
    assert fake_onediffx[1][0] == "compile_pipe"


def test_oneflow_leaves_a_t5_text_encoder_uncompiled(fake_onediffx):
    T5EncoderModel = type("T5EncoderModel", (), {})
    get_backend("onediff-oneflow").apply(types.SimpleNamespace(text_encoder=T5EncoderModel()))
    assert fake_onediffx == [("compile_pipe", {"ignores": ("text_encoder",)})]


# ---------------------------------------------------------------------------- user backends


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "my_accel.py").write_text(
        "def good(pipe, **options):\n"
        "    pipe.accelgate_options = options\n"
        "    return pipe\n"
        "def forgets_return(pipe):\n"
        "    pipe.unet.eval()\n"
        "def returns_unet(pipe):\n"
        "    return pipe.unet\n"
        "NOT_CALLABLE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_accel"
    sys.modules.pop("my_accel", None)


def test_user_backend_calls_the_factory_with_its_options(factories):
    spec = user_backend("mine", "my_accel:good", {"level": 2})
    assert spec.user and spec.name == "mine" and dict(spec.options) == {"level": 2}
    pipe = spec.apply(fresh("tiny-sd"), **dict(spec.options))
    assert pipe.accelgate_options == {"level": 2}
    assert resolve_factory("my_accel:good").__name__ == "good"


@pytest.mark.parametrize("text", ["my_accel", "my_accel:", ":good", "my_accel:good:x", ""])
def test_malformed_factory_string_names_backend_string_and_form(factories, text):
    with pytest.raises(ValueError, match=r"backend 'mine': factory .* is not of the form 'module:function'.*sys\.path"):
        user_backend("mine", text)


def test_factory_module_that_does_not_import(factories):
    with pytest.raises(ValueError) as info:
        user_backend("mine", "no_such_accel_module:build")
    message = str(info.value)
    for part in ("backend 'mine'", "'no_such_accel_module:build'", "ModuleNotFoundError", "sys.path", "rootdir"):
        assert part in message


def test_factory_attribute_missing_or_not_callable(factories):
    with pytest.raises(ValueError, match=r"'my_accel' has no attribute 'bulid'.*imported from .*my_accel.py"):
        user_backend("mine", "my_accel:bulid")
    with pytest.raises(ValueError, match="names a int, not a callable"):
        user_backend("mine", "my_accel:NOT_CALLABLE")


def test_factory_returning_something_else_than_the_pipeline(factories):
    spec = user_backend("mine", "my_accel:returns_unet")
    returned_unet = "factory 'my_accel:returns_unet' returned UNet2DConditionModel.*must return the pipeline"
    with pytest.raises(TypeError, match=returned_unet):
        spec.apply_to(fresh("tiny-sd"))
    spec = user_backend("mine", "my_accel:forgets_return")
    forgot = r"returned NoneType \(did it modify the pipeline in place and forget `return pipe`\?\)"
    with pytest.raises(TypeError, match=forgot):
        spec.apply_to(fresh("tiny-sd"))
