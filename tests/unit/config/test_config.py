"""Config schema: every mistake is a ConfigError that says where and what is allowed."""
from pathlib import Path

import pytest

from accelgate.config.load import build_config
from accelgate.config.schema import ConfigError, parse_device, parse_name_list, parse_resolution
from accelgate.matrix import build_matrix

SOURCE = Path("/project/accelgate.toml")


def _build(**raw):
    return build_config(raw, SOURCE, SOURCE.parent)


def test_defaults_give_the_embedded_tiny_models_on_eager():
    config = _build()
    assert {m.id for m in config.models} >= {"tiny-sd", "tiny-sdxl", "tiny-sd-img2img", "tiny-pix2pix",
                                              "tiny-pixart", "tiny-dit"}
    assert [b.spec.name for b in config.backends] == ["eager"]
    assert config.tolerance("ssim", "tiny-sd", "eager").threshold == 0.995
    assert config.baseline_dir == SOURCE.parent / "baselines"


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'modles'.*did you mean 'models'"):
        _build(modles=["tiny-sd"])
    with pytest.raises(ConfigError, match=r"\[model.tiny-sd\]: unknown key 'stpes'"):
        _build(models=["tiny-sd"], model={"tiny-sd": {"stpes": 3}})


def test_mistyped_value_is_named():
    with pytest.raises(ConfigError, match="key 'steps' must be a int, got str"):
        _build(models=["tiny-sd"], model={"tiny-sd": {"steps": "four"}})
    with pytest.raises(ConfigError, match="key 'threads' must be a int, got bool"):
        _build(threads=True)


def test_unknown_model_and_backend_list_the_valid_names():
    with pytest.raises(ConfigError, match="unknown model 'tiny-foo'; catalog models: .*tiny-sd"):
        _build(models=["tiny-foo"])
    with pytest.raises(ConfigError, match="unknown backend 'turbo'; built-in backends: .*eager"):
        _build(backends=["eager", "turbo"])


def test_factory_that_does_not_import_is_a_config_error():
    with pytest.raises(ConfigError, match=r"\[backend.mine\]"):
        _build(backends=["eager", "mine"], backend={"mine": {"factory": "no_such_module_xyz:make"}})
    with pytest.raises(ConfigError, match=r"\[backend.mine\]"):
        _build(backends=["eager", "mine"], backend={"mine": {"factory": "not an import path"}})


def test_loosening_needs_a_reason_and_applies_most_specific_first():
    with pytest.raises(ConfigError, match="one-line reason"):
        _build(backends=["eager", "bf16"], loosen=[{"backend": "bf16", "ssim": 0.9}])
    config = _build(
        models=["tiny-sd", "tiny-pixart"], backends=["eager", "bf16"],
        loosen=[{"backend": "bf16", "ssim": 0.99, "reason": "bf16 rounding"},
                {"backend": "bf16", "model": "tiny-pixart", "ssim": 0.8, "reason": "transformer amplifies"}],
    )
    assert config.tolerance("ssim", "tiny-sd", "bf16").threshold == 0.99
    assert config.tolerance("ssim", "tiny-pixart", "bf16").reason == "transformer amplifies"
    assert config.tolerance("ssim", "tiny-pixart", "eager").threshold == 0.995
    assert config.tolerance("psnr", "tiny-pixart", "bf16").reason == ""


def test_resolution_the_model_cannot_make():
    with pytest.raises(ConfigError, match="multiples of 8"):
        _build(models=["tiny-sd"], model={"tiny-sd": {"resolutions": ["30x30"]}})
    with pytest.raises(ConfigError, match="is not a resolution"):
        parse_resolution("sixty-four")
    assert parse_resolution("64x32") == (64, 32)


def test_narrowing_options_list_the_valid_values():
    with pytest.raises(ConfigError, match="--models: unknown 'sd9'; valid values: a, b"):
        parse_name_list("a,sd9", ["a", "b"], "--models")
    config = _build(models=["tiny-sd"], model={"tiny-sd": {"resolutions": ["32x32", "64x64"]}})
    with pytest.raises(ConfigError, match="48x48 is not a resolution of the selected models; valid values: 32x32, 64x64"):
        build_matrix(config, resolutions=[(48, 48)])
    assert [c.id for c in build_matrix(config, resolutions=[(64, 64)]).cases] == ["tiny-sd/eager/64x64"]


def test_devices():
    assert parse_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match="auto, cpu, cuda, cuda:N"):
        parse_device("tpu")


def test_backend_restriction_and_unserved_models_become_not_applicable():
    config = _build(models=["tiny-sd", "tiny-dit"], backends=["eager", "deepcache", "torch-compile"],
                    backend={"torch-compile": {"models": ["tiny-sd"]}})
    matrix = build_matrix(config)
    ids = {c.id for c in matrix.cases}
    assert "tiny-dit/deepcache/32x32" not in ids and "tiny-sd/deepcache/32x32" in ids
    reasons = {(n.model, n.backend): n.reason for n in matrix.not_applicable}
    assert "only on tiny-sd" in reasons[("tiny-dit", "torch-compile")]
    assert reasons[("tiny-dit", "deepcache")]


def test_new_model_needs_its_identity():
    with pytest.raises(ConfigError, match="to declare a new one also give: .*pipeline_class"):
        _build(models=["my-model"], model={"my-model": {"repo_id": "me/model"}})
    config = _build(models=["my-model"], model={"my-model": {
        "repo_id": "me/model", "pipeline_class": "StableDiffusionPipeline", "task": "text-to-image",
        "denoiser": "unet", "resolutions": ["512x512"], "steps": 20, "guidance_scale": 7.5, "prompt_set": "sd2"}})
    assert config.models[0].gpu and config.models[0].resolutions == ((512, 512),)
