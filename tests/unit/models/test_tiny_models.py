"""The embedded tiny pipelines: offline build, the real save/load path, determinism, hashes,
and the property that makes them a test bed at all: damage to the denoiser is visible."""
import numpy as np
import pytest
import torch

import accelgate.models.catalog  # noqa: F401  (registers the models)
from accelgate.matrix import Case
from accelgate.backends.registry import get_backend
from accelgate.generate import generate
from accelgate.metrics.pairwise import ssim
from accelgate.config.quality import DEFAULT_TOLERANCES
from accelgate.models.loading import check_available, load_pipeline, model_hash, prepare_resolution
from accelgate.models.registry import MODELS, build, get_model
from fixtures import example_backends

TINY = sorted(m for m, spec in MODELS.items() if spec.source == "tiny")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    torch.set_num_threads(1)  # bitwise equality needs a pinned thread count
    return tmp_path_factory.mktemp("tiny-cache")


def _images(model_id, cache, damage=None, resolution=(32, 32)):
    spec = get_model(model_id)
    pipe = load_pipeline(spec, "cpu", cache_dir=cache)
    prepare_resolution(pipe, spec, resolution[1], resolution[0])
    if damage is not None:
        pipe = damage(pipe)
    case = Case(spec, get_backend("eager"), resolution, reference=True)
    return generate(pipe, case).images


@pytest.mark.parametrize("model_id", TINY)
def test_build_save_reload_and_same_seed_are_bitwise_equal(model_id, cache):
    first = _images(model_id, cache)  # builds, save_pretrained, from_pretrained
    assert any(p.name.startswith(model_id) for p in cache.iterdir())
    second = _images(model_id, cache)  # loads the saved copy
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert all(image.std() > 10 for image in first), "images must not be flat"


def _worst(a, b):
    return min(ssim(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("model_id", TINY)
def test_denoiser_noise_is_visible_but_channels_last_is_not(model_id, cache):
    clean = _images(model_id, cache)
    noisy = _images(model_id, cache, lambda p: example_backends.denoiser_noise(p, sigma=0.1))
    harmless = _images(model_id, cache, lambda p: get_backend("channels-last").apply(p))
    # visible = below the gate's default SSIM tolerance (0.995); img2img at strength 0.6 keeps
    # most of its input image and lands at 0.991, the others below 0.985
    assert _worst(noisy, clean) < DEFAULT_TOLERANCES["ssim"]
    assert _worst(harmless, clean) > 0.9999


BLIND_TO_SKIPPED_STEPS = pytest.mark.xfail(strict=True, reason=(
    "random weights decide the image in the first step: at strength 0.6 (4 steps) skipping every 2nd "
    "step moves it by SSIM 0.9999 (benchmarks/selftest.md); the trained test bed sees it (issue 8)"))


@pytest.mark.parametrize("model_id", [pytest.param(m, marks=BLIND_TO_SKIPPED_STEPS) if m == "tiny-sd-img2img" else m
                                      for m in TINY])
def test_skipped_steps_are_visible(model_id, cache):
    assert _worst(_images(model_id, cache, example_backends.skip_steps), _images(model_id, cache)) < 0.95


def test_img2img_runs_below_full_strength_so_a_backend_that_forces_it_is_visible(cache):
    """At strength 1 the input image barely matters; the catalog's 0.6 makes it shape the result,
    and the shipped damage that forces strength 1 fails the default SSIM tolerance by far."""
    from accelgate.backends.damage import DAMAGES

    assert get_model("tiny-sd-img2img").call_kwargs["strength"] < 1.0
    damage = DAMAGES["damage-full-strength"]
    clean = _images("tiny-sd-img2img", cache)
    forced = _images("tiny-sd-img2img", cache, lambda p: damage.apply(p, **dict(damage.options)))
    assert max(ssim(a, b) for a, b in zip(forced, clean)) < 0.9


def test_model_hash_is_stable_and_sees_a_changed_weight(cache):
    spec = get_model("tiny-dit")
    pipe = load_pipeline(spec, "cpu", cache_dir=cache)
    assert model_hash(pipe) == model_hash(load_pipeline(spec, "cpu", cache_dir=cache))
    before = model_hash(pipe)
    with torch.no_grad():
        next(pipe.transformer.parameters()).view(-1)[0] += 1e-3
    assert model_hash(pipe) != before


@pytest.mark.parametrize("model_id", TINY)
def test_the_saved_copy_has_the_built_weights(model_id, cache):
    spec = get_model(model_id)
    with torch.random.fork_rng(devices=[]):
        built = build(spec)
    assert model_hash(built) == model_hash(load_pipeline(spec, "cpu", cache_dir=cache))


def test_a_cold_build_leaves_the_callers_rng_alone(tmp_path, cache):
    spec = get_model("tiny-dit")
    draws = []
    for where in (tmp_path / "cold", cache):  # builds, then only loads
        torch.manual_seed(123)
        load_pipeline(spec, "cpu", cache_dir=where)
        draws.append(torch.rand(4))
    assert torch.equal(draws[0], draws[1])


def test_absent_hub_model_says_what_to_fetch_and_where(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # set after import: must still be obeyed
    reason = check_available(get_model("sd15"))
    assert "not in the Hugging Face cache" in reason and str(tmp_path) in reason
    assert "huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5" in reason
    assert "[tool.accelgate.model.sd15]" in reason
    assert "has no model_index.json" in check_available(get_model("sd15"), path=str(tmp_path))


def test_impossible_resolutions_are_rejected(cache):
    spec = get_model("tiny-dit")
    pipe = load_pipeline(spec, "cpu", cache_dir=cache)
    with pytest.raises(ValueError, match="cannot make 34x34: width and height must be multiples of 4"):
        prepare_resolution(pipe, spec, 34, 34)
    with pytest.raises(ValueError, match="square images only"):
        prepare_resolution(pipe, spec, 32, 64)


@pytest.mark.parametrize("resolution", [(32, 32), (64, 64)])
def test_dit_at_any_resolution_survives_a_save_and_reload_of_its_transformer(cache, tmp_path, resolution):
    """Config and modules agree at every size: a backend that rebuilds the transformer from its
    config (save_pretrained + from_pretrained) makes the same images (was SSIM 0.79 at 32x32)."""
    from diffusers import DiTTransformer2DModel

    spec = get_model("tiny-dit")
    pipe = load_pipeline(spec, "cpu", cache_dir=cache)
    prepare_resolution(pipe, spec, *resolution)
    patch = pipe.transformer.pos_embed
    assert pipe.transformer.config.sample_size // pipe.transformer.config.patch_size == patch.base_size == patch.height
    case = Case(spec, get_backend("eager"), resolution, reference=True)
    before = generate(pipe, case).images
    pipe.transformer.save_pretrained(tmp_path / "transformer")
    pipe.transformer = DiTTransformer2DModel.from_pretrained(tmp_path / "transformer").eval()
    after = generate(pipe, case).images
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def _fake_snapshot(cache_dir, repo_id, weights: bool):
    """A hub cache entry laid out as huggingface_hub writes it, with or without UNet weights."""
    import json

    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    for folder, config in (("unet", "config.json"), ("scheduler", "scheduler_config.json")):
        (snapshot / folder).mkdir(parents=True)
        (snapshot / folder / config).write_text("{}")
    if weights:
        (snapshot / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "scheduler": ["diffusers", "PNDMScheduler"], "safety_checker": [None, None]}
    (snapshot / "model_index.json").write_text(json.dumps(index))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


def test_an_interrupted_download_is_a_reason_not_a_crash(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    spec = get_model("sd15")
    _fake_snapshot(tmp_path, spec.repo_id, weights=False)
    reason = check_available(spec)
    assert "is incomplete (missing unet/ weights)" in reason and "huggingface-cli download" in reason
    (tmp_path / f"models--{spec.repo_id.replace('/', '--')}" / "snapshots" / ("0" * 40) / "unet"
     / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert check_available(spec) is None
