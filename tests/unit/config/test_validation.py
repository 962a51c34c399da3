"""Inputs that switched the gate off, or failed far from their cause (issue 9): each is refused
when the config is read, naming the file, the table and the key."""
from pathlib import Path

import pytest

from accelgate.config.checks import check_libraries
from accelgate.config.find import find_config
from accelgate.config.load import build_config
from accelgate.config.schema import ConfigError

SOURCE = Path("/project/accelgate.toml")


def _build(**raw):
    return build_config(raw, SOURCE, SOURCE.parent)


def _refused(match: str, **raw) -> str:
    with pytest.raises(ConfigError, match=match) as error:
        _build(**raw)
    assert str(SOURCE) in str(error.value)  # the file is named
    return str(error.value)


@pytest.mark.parametrize("steps", [-3, 0])
def test_steps_below_one_are_refused_where_written(steps):
    # steps = -3 made an undenoised baseline against which heavy noise passed; 0 a ZeroDivisionError
    _refused(rf"\[model.tiny-sd\]: steps must be >= 1 .*got {steps}", models=["tiny-sd"],
             model={"tiny-sd": {"steps": steps}})
    _refused(rf"\[generation\]: steps must be >= 1 .*got {steps}", generation={"steps": steps})


def test_prompt_limit_and_seed_are_checked_at_load():
    _refused(r"\[model.tiny-sd\]: prompt_limit must be >= 1", models=["tiny-sd"], model={"tiny-sd": {"prompt_limit": 0}})
    _refused(r"seed must be >= 0", models=["tiny-sd"], model={"tiny-sd": {"seed": -1}})


@pytest.mark.parametrize("metric, value", [("ssim", -2), ("ssim", 1.5), ("max_abs", 300), ("color_shift", 1000),
                                           ("psnr", -1)])
def test_tolerances_outside_their_metrics_range_are_refused(metric, value):
    # -2 / 300 / 1000 passed a noise backend; 1.5 failed every image and read as reference drift
    message = _refused(rf"\[tolerances\]: {metric} = {value}.* outside {metric}'s range", tolerances={metric: value})
    assert "The default is" in message
    _refused(rf"loosen.*{metric} = {value}.* outside", backends=["eager", "bf16"],
             loosen=[{"backend": "bf16", metric: value, "reason": "r"}])


def test_tolerances_at_the_edges_of_their_range_are_fine():
    config = _build(tolerances={"ssim": 1.0, "max_abs": 255, "color_shift": 0, "psnr": float("inf")})
    assert config.tolerance("ssim", "tiny-sd", "eager").threshold == 1.0


@pytest.mark.parametrize("key", ["models", "backends"])
def test_duplicate_and_empty_lists_are_refused(key):
    value = ["tiny-sd", "tiny-sd"] if key == "models" else ["eager", "eager"]
    _refused(rf"{key} lists '{value[0]}' twice", **{key: value})
    _refused(rf"{key} is empty", **{key: []})
    _refused("resolutions lists", models=["tiny-sd"], model={"tiny-sd": {"resolutions": ["32x32", "32x32"]}})


def test_backend_options_are_checked_against_the_apply_function():
    message = _refused(r"\[backend.torch-compile\]: options: 'mdoe' is not an option of backend 'torch-compile' "
                       r"\(did you mean 'mode'\?\)", backends=["eager", "torch-compile"],
                       backend={"torch-compile": {"options": {"mdoe": "max-autotune"}}})
    assert "takes: mode, dynamic, fullgraph, backend" in message


def test_user_factory_options_are_checked_too(example_backends):
    _refused(r"'sigam' is not an option of backend 'noise' \(did you mean 'sigma'\?\)", backends=["eager", "noise"],
             backend={"noise": {"factory": "fixtures.example_backends:denoiser_noise", "options": {"sigam": 1}}})
    config = _build(backends=["eager", "same"], backend={"same": {"factory": "fixtures.example_backends:identity",
                                                                   "options": {"anything": 1}}})  # takes **options
    assert config.backend("same").spec.options["anything"] == 1


def test_a_resolution_far_above_the_models_own_is_refused_unless_allowed():
    _refused(r"4096x4096 has more than 4x the pixels of tiny-sd's largest native resolution 64x64.*allow_large = true",
             models=["tiny-sd"], model={"tiny-sd": {"resolutions": ["4096x4096"]}})
    config = _build(models=["tiny-sd"], model={"tiny-sd": {"resolutions": ["128x128"]}})  # 4x the pixels: fine
    assert config.models[0].resolutions == ((128, 128),)
    config = _build(models=["tiny-sd"], model={"tiny-sd": {"resolutions": ["4096x4096"], "allow_large": True}})
    assert config.models[0].resolutions == ((4096, 4096),)


def test_case_timeout_must_be_positive():
    _refused("case_timeout must be > 0 seconds", case_timeout=0)
    assert _build(case_timeout=90).case_timeout == 90.0


def test_call_kwargs_and_scheduler_are_checked_against_diffusers():
    config = _build(models=["tiny-pixart"], model={"tiny-pixart": {"call_kwargs": {"use_resolution_bining": False}}})
    with pytest.raises(ConfigError, match=r"\[model.tiny-pixart\]: call_kwargs: 'use_resolution_bining' is not a "
                                          r"parameter of PixArtSigmaPipeline.__call__ \(did you mean "
                                          r"'use_resolution_binning'\?\).*swallow it in \*\*kwargs"):
        check_libraries(config.models)
    config = _build(models=["tiny-sd"], model={"tiny-sd": {"call_kwargs": {"num_inference_steps": 2}}})
    with pytest.raises(ConfigError, match="'num_inference_steps' is set by accelgate for every case; set steps"):
        check_libraries(config.models)
    config = _build(models=["tiny-sd"], model={"tiny-sd": {"scheduler": "EulerDiscreteSchedular"}})
    with pytest.raises(ConfigError, match=r"scheduler 'EulerDiscreteSchedular' is not a diffusers scheduler class "
                                          r"\(did you mean 'EulerDiscreteScheduler'\?\)"):
        check_libraries(config.models)


def test_every_catalog_model_passes_the_library_checks():
    import accelgate.models.catalog  # noqa: F401
    from accelgate.models.registry import MODELS

    check_libraries([m for m in MODELS.values() if m.source == "tiny"])


# ------------------------------------------------------------------------------ reading files
def test_a_non_utf8_config_file_is_named(tmp_path):
    path = tmp_path / "accelgate.toml"
    path.write_bytes('models = ["tiny-sd"]  # caf\xe9\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{path} is not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        find_config(tmp_path, str(path))


def test_a_directory_given_as_the_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=rf"config {tmp_path} is a directory, not a TOML file"):
        find_config(tmp_path, str(tmp_path))


def test_an_explicit_file_without_accelgate_settings_is_an_error_not_the_defaults(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match="it has no \\[tool.accelgate\\] table"):
        find_config(tmp_path, str(pyproject))
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        find_config(tmp_path, str(empty))


def test_precedence_rootdir_then_invocation_directory_and_the_header_says_which(tmp_path):
    root, here = tmp_path / "root", tmp_path / "root" / "sub"
    here.mkdir(parents=True)
    found = find_config(root, None, here)
    assert found.source is None and "running the built-in default matrix" in found.notes[0]
    assert str(root / "pyproject.toml") in found.notes[0] and str(here / "pyproject.toml") in found.notes[0]
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n')  # no [tool.accelgate]: not a config
    (here / "pyproject.toml").write_text('[tool.accelgate]\nmodels = ["tiny-dit"]\n')
    found = find_config(root, None, here)
    assert found.source == (here / "pyproject.toml").resolve() and found.raw == {"models": ["tiny-dit"]}
    assert "the invocation directory's" in found.notes[0]
    (root / "pyproject.toml").write_text('[tool.accelgate]\nmodels = ["tiny-sd"]\n')
    found = find_config(root, None, here)
    assert found.source == (root / "pyproject.toml").resolve() and found.raw == {"models": ["tiny-sd"]}
    assert found.warnings and "holds another [tool.accelgate] table, not used" in found.warnings[0]
    assert f"--accelgate-config={(here / 'pyproject.toml').resolve()}" in found.warnings[0]
