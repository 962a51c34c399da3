"""Issue 9 as a user meets it, through pytester (in-process): narrowing to nothing, usage errors
instead of silent fallbacks or INTERNALERRORs, commands that reproduce the situation, and
reports that say what happened. Every message is asserted to name the cause, and every test
that could lose a baseline or a report checks that it did not."""
import json
import os
import shlex
from pathlib import Path

import pytest

# pytester runs pytest in this process and drops the modules a run imported; these cannot be
# imported twice (see tests/unit/report/test_report_runs.py).
import torch._dynamo  # noqa: F401,E402
import torch._inductor.utils  # noqa: F401,E402
from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel, StableDiffusionPipeline  # noqa: F401,E402

REPO = Path(__file__).resolve().parents[2]
# basenames of their own: the suite's modules of the same names are already imported in this process
MODULES = {f"test_inner_{name}": (REPO / "tests" / f"test_{name}.py").read_text() for name in (
    "text_to_image", "image_to_image", "class_conditional", "speed", "distribution")}
CONFIG = """
models = ["tiny-sd", "tiny-dit"]
backends = ["eager", "channels-last", "deepcache"]
baseline_dir = "baselines"
[model.tiny-dit]
steps = 3
[model.tiny-sd]
steps = 3
[distribution.cpu_run]
models = ["tiny-sd"]
backends = ["eager", "deepcache"]
"""


@pytest.fixture
def project(pytester):
    pytester.syspathinsert(REPO)  # fixtures.* by factory path
    pytester.makepyfile(**{f"{k}": v for k, v in MODULES.items()})
    config = pytester.path / "accelgate.toml"
    config.write_text(CONFIG)
    return config


def _run(pytester, config, *args):
    return pytester.runpytest("-p", "no:cacheprovider", f"--accelgate-config={config}", *args)


@pytest.mark.parametrize("args, selected", [
    (("-m", "quality", "--models=tiny-sd", "--backends=eager"),
     {"test_distribution_metrics_cpu[tiny-sd/eager/32x32]", "test_text_to_image[tiny-sd/eager/32x32]",
      "test_text_to_image[tiny-sd/eager/64x64]"}),
    (("-m", "quality", "--backends=deepcache"),
     {"test_distribution_metrics_cpu[tiny-sd/deepcache/32x32]", "test_text_to_image[tiny-sd/deepcache/32x32]",
      "test_text_to_image[tiny-sd/deepcache/64x64]"}),
    (("-m", "quality", "--regen-baselines", "--models=tiny-sd", "--resolutions=32x32"),
     {"test_text_to_image[tiny-sd/eager/32x32]"}),
    (("--models=tiny-dit", "--backends=deepcache"), set()),  # DeepCache cannot serve a transformer: nothing
])
def test_narrowing_to_nothing_is_a_clean_deselect_in_every_module(pytester, project, args, selected):
    # each of these was INTERNALERROR> AttributeError: 'NotSetType' object has no attribute 'id', exit 3
    result = _run(pytester, project, "--collect-only", *args)
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), result.stdout.str()
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    functions = {line.strip()[len("<Function "):-1] for line in result.stdout.lines if "<Function " in line}
    assert functions == selected
    result.stdout.fnmatch_lines(["*deselected*"])


def test_a_narrowed_run_runs(pytester, project):
    result = _run(pytester, project, "-m", "quality and not slow", "--models=tiny-dit", "--backends=eager",
                  "--regen-baselines")
    result.assert_outcomes(passed=2, deselected=6)
    result = _run(pytester, project, "-m", "quality and not slow", "--models=tiny-dit", "--backends=eager")
    result.assert_outcomes(passed=2, deselected=6)


def test_a_test_the_config_gives_no_case_skips_with_its_reason(pytester, project):
    result = _run(pytester, project, "-rs", "-k", "no-case and image_to_image")  # no image-to-image model here
    result.assert_outcomes(skipped=1, deselected=23)
    result.stdout.fnmatch_lines(["*accelgate_case: the (narrowed) matrix has no image-to-image or edit case*"])


@pytest.mark.parametrize("args, message", [
    (("--models=",), "--models is empty; valid values: tiny-sd, tiny-dit"),
    (("--resolutions=,",), "--resolutions is empty"),
    (("--backends=eager,eager",), "--backends: 'eager' given twice"),
    (("--regen-baselines", "--backends=channels-last"),
     "--regen-baselines writes the reference backend's images ('eager'), but --backends=channels-last leaves it out"),
    (("--regen-baselines", "-k", "channels-last"), "--regen-baselines selected no case that writes a baseline"),
    (("--device=cuda",), "--device cuda: this machine has no CUDA device torch can use"),
    (("--case-timeout=-1",), "--case-timeout must be >= 0 seconds"),
])
def test_inputs_that_ran_everything_or_crashed_are_usage_errors(pytester, project, args, message):
    result = _run(pytester, project, "--collect-only", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    assert message in result.stderr.str()
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_config_mistakes_are_usage_errors_naming_file_and_key(pytester, project):
    for bad, message in (('models = []', "models is empty"),
                         ('models = ["tiny-dit", "tiny-dit"]', "models lists 'tiny-dit' twice"),
                         ('models = ["tiny-dit"]\n[tolerances]\nssim = -2', "ssim = -2.0 is outside ssim's range"),
                         ('models = ["tiny-dit"]\n[model.tiny-dit]\nsteps = -3', "steps must be >= 1")):
        project.write_text(bad + "\n")
        result = _run(pytester, project, "--collect-only")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert f"{project}" in result.stderr.str() and message in result.stderr.str(), result.stderr.str()
    project.write_text('models = ["tiny-pixart"]\n[model.tiny-pixart]\ncall_kwargs = { clean_captoin = false }\n')
    result = _run(pytester, project, "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "call_kwargs: 'clean_captoin' is not a parameter of PixArtSigmaPipeline.__call__ (did you mean " \
           "'clean_caption'?)" in result.stderr.str()


def test_the_header_names_the_config_or_says_the_defaults_run(pytester):
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["accelgate: no ?tool.accelgate? table in */pyproject.toml and no --accelgate-config: "
                                 "running the built-in default matrix*"])
    pytester.makefile(".toml", pyproject='[tool.accelgate]\nmodels = ["tiny-dit"]\n')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["accelgate: config */pyproject.toml ?tool.accelgate?, the rootdir's"])


def test_a_path_option_that_moves_the_rootdir_keeps_the_invocation_directorys_config(pytester):
    repo, out = pytester.path / "work" / "repo", pytester.path / "out"
    repo.mkdir(parents=True)
    out.mkdir()
    (repo / "pyproject.toml").write_text('[tool.pytest.ini_options]\naddopts = []\n'
                                         '[tool.accelgate]\nmodels = ["tiny-dit"]\nbackends = ["eager"]\n')
    (repo / "test_x.py").write_text("def test_x():\n    pass\n")
    os.chdir(repo)
    # written with a space, the report path is read as a test path while pytest picks the rootdir: it
    # moves up to the common ancestor, which has no pyproject.toml (the built-in defaults ran silently)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--quality-report", str(out))
    result.stdout.fnmatch_lines([f"accelgate: config {repo}/pyproject.toml ?tool.accelgate?, the invocation "
                                 "directory's (the rootdir's has none)", f"rootdir: {pytester.path}"])


def test_the_printed_regen_command_keeps_baseline_dir_and_config_and_reproduces(pytester, project):
    spaced = pytester.path / "my configs"
    spaced.mkdir()
    config = spaced / "accelgate.toml"
    config.write_text('models = ["tiny-dit"]\nbackends = ["eager"]\nbaseline_dir = "committed"\n'
                      '[model.tiny-dit]\nsteps = 3\nresolutions = ["32x32"]\n')
    external = pytester.path / "external baselines"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--accelgate-config={config}", f"--baseline-dir={external}",
                                "-m", "quality and not slow", "-k", "class_conditional")
    result.assert_outcomes(failed=1, deselected=5)
    line = next(line[line.index("pytest -m quality --regen"):] for line in result.stdout.lines
                if "pytest -m quality --regen" in line)
    assert line == shlex.join(["pytest", "-m", "quality", "--regen-baselines", "-k", "tiny-dit/eager/32x32",
                               f"--accelgate-config={config}", f"--baseline-dir={external}"])
    rerun = pytester.runpytest("-p", "no:cacheprovider", *shlex.split(line)[1:])  # follow it
    rerun.assert_outcomes(passed=1, deselected=5)
    assert (external / "cpu/tiny-dit/32x32/manifest.json").is_file()
    assert not (spaced / "committed").exists()  # the config's own baselines were not touched


def test_a_prompt_file_given_by_a_path_that_does_not_exist_fails(pytester, project):
    project.write_text('models = ["tiny-sd"]\nbackends = ["eager"]\n[model.tiny-sd]\nresolutions = ["32x32"]\n'
                       '[distribution]\nmetric_models = "random"\nmodels = ["tiny-sd"]\n'
                       f'prompt_sets = {{ tiny-sd = "hpdv2:{pytester.path}/no-such-dir" }}\n')
    result = _run(pytester, project, "-m", "quality and slow")
    assert result.parseoutcomes()["failed"] == 1  # it skipped, and the run passed with exit 0
    result.stdout.fnmatch_lines(["*no-such-dir does not exist*", "*names this path explicitly*"])


def test_a_corrupt_saved_benchmark_run_is_named(pytester, project):
    from pytest_benchmark.utils import get_machine_id

    saved = pytester.path / ".benchmarks" / get_machine_id()
    saved.mkdir(parents=True)
    (saved / "0001_broken.json").write_text('{"benchmarks": [')
    result = _run(pytester, project, "-m", "benchmark", "--benchmark-compare", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "no readable saved benchmark run (unreadable: " in result.stderr.str()
    assert "0001_broken.json" in result.stderr.str()
