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
from accelgate.models.loading import check_available, load_pipeline, model_hash, prepare_resolution
from accelgate.models.registry import MODELS, get_model
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


@pytest.mark.parametrize("model_id", TINY)
def test_denoiser_noise_and_skipped_steps_are_visible_but_channels_last_is_not(model_id, cache):
    clean = _images(model_id, cache)
    noisy = _images(model_id, cache, lambda p: example_backends.denoiser_noise(p, sigma=0.1))
    skipped = _images(model_id, cache, example_backends.skip_steps)
    harmless = _images(model_id, cache, lambda p: get_backend("channels-last").apply(p))
    worst = lambda a, b: min(ssim(x, y) for x, y in zip(a, b))  # noqa: E731
    assert worst(noisy, clean) < 0.985
    assert worst(skipped, clean) < 0.95
    assert worst(harmless, clean) > 0.9999


def test_model_hash_is_stable_and_sees_a_changed_weight(cache):
    spec = get_model("tiny-dit")
    pipe = load_pipeline(spec, "cpu", cache_dir=cache)
    assert model_hash(pipe) == model_hash(load_pipeline(spec, "cpu", cache_dir=cache))
    before = model_hash(pipe)
    with torch.no_grad():
        next(pipe.transformer.parameters()).view(-1)[0] += 1e-3
    assert model_hash(pipe) != before


def test_absent_hub_model_says_what_to_fetch_and_where(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    reason = check_available(get_model("sd15"))
    assert "not in the Hugging Face cache" in reason
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
