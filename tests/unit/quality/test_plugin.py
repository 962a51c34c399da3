"""The plugin as a user meets it, through pytester: options, ids, skips, regen, reports,
and the gate's promise: damage fails, harmless changes pass."""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

TEST_MODULE = """
import pytest
pytestmark = [pytest.mark.quality, pytest.mark.accelgate_tasks("text-to-image", "class-conditional")]

def test_case(accelgate, accelgate_case):
    verdict = accelgate.verdict(accelgate_case)
    assert verdict.passed, verdict.message
"""


def _config(models='["tiny-dit"]', backends='["eager"]', extra=""):
    return f"""
models = {models}
backends = {backends}
baseline_dir = "baselines"
{extra}
"""


@pytest.fixture
def project(pytester):
    pytester.syspathinsert(REPO)  # makes fixtures.example_backends importable by factory path
    pytester.makepyfile(test_matrix=TEST_MODULE)

    def make(config_text, name="accelgate.toml"):
        path = pytester.path / name
        path.write_text(config_text)
        return path

    return make


def _run(pytester, config, *args):
    return pytester.runpytest("-p", "no:cacheprovider", "--accelgate-config", str(config), *args)


def test_unknown_names_are_usage_errors_that_list_valid_values(pytester, project):
    config = project(_config())
    result = _run(pytester, config, "--models", "tiny-foo")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--models: unknown 'tiny-foo'; valid values: tiny-dit*"])
    result = _run(pytester, config, "--resolutions", "48x48")
    result.stderr.fnmatch_lines(["*48x48 is not a resolution of the selected models; valid values: 32x32*"])
    result = _run(pytester, config, "--device", "tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*auto, cpu, cuda, cuda:N*"])


def test_mistyped_config_key_is_a_usage_error_naming_the_file(pytester, project):
    config = project(_config(extra="[model.tiny-dit]\nstpes = 3\n"))
    result = _run(pytester, config)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{config}, ?model.tiny-dit?: unknown key 'stpes'; allowed keys: *steps*"])


def test_missing_baseline_fails_with_the_exact_regen_command(pytester, project):
    config = project(_config())
    result = _run(pytester, config, "--strict-markers", "-k", "32x32")
    result.assert_outcomes(failed=1, deselected=1)
    # issue 9: shell-quoted, and `--option=value` (a bare path after a plugin option can move the rootdir)
    result.stdout.fnmatch_lines(['*no baseline for tiny-dit at 32x32*',
                                 f'*pytest -m quality --regen-baselines -k tiny-dit/eager/32x32 --accelgate-config={config}*'])


def test_regen_then_compare_then_report_twice_identically(pytester, project):
    config = project(_config(backends='["eager", "channels-last", "identity"]', extra=(
        '[backend.identity]\nfactory = "fixtures.example_backends:identity"\n')))
    regen = _run(pytester, config, "--regen-baselines")
    regen.assert_outcomes(passed=2, deselected=4)  # only the reference cases write baselines
    regen.stdout.fnmatch_lines(["*baseline written:*tiny-dit*32x32*"])
    manifest = json.loads((pytester.path / "baselines/cpu/tiny-dit/32x32/manifest.json").read_text())
    assert manifest["settings"]["steps"] > 0 and manifest["model_hash"] and len(manifest["images"]) >= 1
    verdicts = []
    for attempt in ("first", "second"):
        out = pytester.path / f"out-{attempt}"
        result = _run(pytester, config, "--quality-report", str(out), "-v")
        result.assert_outcomes(passed=6)
        result.stdout.fnmatch_lines(["*test_case?tiny-dit/eager/32x32? PASSED*", "*test_case?tiny-dit/identity/64x64? PASSED*"])
        data = json.loads((out / "results.json").read_text())
        verdicts.append([(c["id"], c["outcome"], c["metrics"]["ssim"]["value"]) for c in data["cases"]])
        case = data["cases"][0]
        assert case["model"] == "tiny-dit" and case["resolution"] == [32, 32]
        assert set(case["metrics"]) == {"ssim", "psnr", "max_abs", "color_shift"}
        assert {"value": 1.0, "threshold": 0.995, "op": ">=", "passed": True}.items() <= case["metrics"]["ssim"].items()
        image = case["images"][0]
        assert {"prompt", "seed", "candidate", "baseline", "diff", "metrics"} <= set(image)
        assert (out / image["candidate"]).is_file() and (out / image["diff"]).is_file()
        summary = (out / "summary.md").read_text()
        assert "## tiny-dit @ 32x32" in summary
        assert "| Metric | eager (reference) | channels-last | identity |" in summary
    assert verdicts[0] == verdicts[1]


def _with_baselines(pytester, project, backends, extra=""):
    config = project(_config(backends=backends, extra=extra))
    _run(pytester, config, "--regen-baselines").assert_outcomes(passed=2, deselected=_count(backends) * 2 - 2)
    return config


def _count(backends):
    return backends.count('"')//2


DAMAGE = """
[backend.noise]
factory = "fixtures.example_backends:denoiser_noise"
options = {sigma = 0.1}
[backend.skip-steps]
factory = "fixtures.example_backends:skip_steps"
[backend.colour]
factory = "fixtures.example_backends:color_cast"
options = {shift = 0.04}
[backend.nan]
factory = "fixtures.example_backends:nan_vae"
[backend.broken]
factory = "fixtures.example_backends:broken"
[backend.wrong-return]
factory = "fixtures.example_backends:not_a_pipeline"
"""


def test_damaging_factory_backends_fail_with_reports_and_the_session_goes_on(pytester, project):
    backends = '["eager", "noise", "skip-steps", "colour", "nan", "broken", "wrong-return"]'
    config = _with_baselines(pytester, project, backends, DAMAGE)
    result = _run(pytester, config, "--resolutions", "32x32")
    result.assert_outcomes(passed=1, failed=6)
    text = result.stdout.str()
    assert "tiny-dit/noise/32x32: FAILED - quality dropped vs the baseline: ssim" in text
    assert "tiny-dit/skip-steps/32x32: FAILED - quality dropped vs the baseline" in text
    colour = text.split("tiny-dit/colour/32x32: FAILED")[1].split("image '")[0]
    assert "FAIL color_shift" in colour and "ok   ssim" in colour  # SSIM is blind to the cast
    assert "degenerate output: image 0" in text and "NaN/Inf" in text
    assert "RuntimeError" in text and "this backend crashed" in text
    assert "returned DiTTransformer2DModel" in text and "not a diffusers DiffusionPipeline" in text
    result.stdout.fnmatch_lines(["*candidate */images/tiny-dit/noise/32x32/00-candidate.png*",
                                 "*diff */images/tiny-dit/noise/32x32/00-diff.png*"])


def test_stale_and_wrong_size_baselines_name_the_problem(pytester, project):
    config = _with_baselines(pytester, project, '["eager"]')
    config.write_text(config.read_text() + "[model.tiny-dit]\nsteps = 2\n")
    result = _run(pytester, config, "--resolutions", "32x32")
    result.stdout.fnmatch_lines(["*stale baseline*", "*steps: baseline has * config has 2*"])
    config.write_text(_config())
    root = pytester.path / "baselines/cpu/tiny-dit"
    (root / "64x64/manifest.json").write_text((root / "32x32/manifest.json").read_text())
    for png in (root / "32x32").glob("*.png"):
        (root / "64x64" / png.name).write_bytes(png.read_bytes())
    result = _run(pytester, config, "--resolutions", "64x64")
    result.stdout.fnmatch_lines(["*baseline images are 32x32 but the case is 64x64*"])


def test_reference_drift_is_named(pytester, project):
    config = _with_baselines(pytester, project, '["eager"]')
    from accelgate.quality.baselines import BaselineStore

    store = BaselineStore(pytester.path / "baselines", "cpu", lambda case_id: "")
    baseline = store.read("x", "tiny-dit", "32x32")
    shifted = [(image // 2).astype(image.dtype) for image in baseline.images]
    store.write("tiny-dit", "32x32", baseline.manifest, shifted)
    result = _run(pytester, config, "--resolutions", "32x32")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*reference drift: the reference backend no longer reproduces its stored baseline*",
                                 "*REFERENCE DRIFT tiny-dit/eager/32x32*"])


def test_regen_with_k_rewrites_only_the_selected_baselines(pytester, project):
    config = project(_config(models='["tiny-dit", "tiny-pixart"]'))
    _run(pytester, config, "--regen-baselines").assert_outcomes(passed=4)
    root = pytester.path / "baselines/cpu"
    before = {p: p.stat().st_mtime_ns for p in root.rglob("manifest.json")}
    _run(pytester, config, "--regen-baselines", "-k", "tiny-dit").assert_outcomes(passed=2, deselected=2)
    changed = {p.parent.parent.name for p in before if p.stat().st_mtime_ns != before[p]}
    assert changed == {"tiny-dit"}
    assert not [p for p in root.rglob("*") if ".new-" in p.name or ".old-" in p.name]


def test_gpu_models_and_onediff_are_skipped_with_what_is_missing(pytester, project):
    config = project(_config(models='["tiny-dit", "sd15"]', backends='["eager", "onediff-oneflow", "onediff-nexfort"]'))
    result = _run(pytester, config, "-rs", "--resolutions", "32x32,512x512")
    result.stdout.fnmatch_lines([
        "*onediff-oneflow' needs a CUDA device*pip install*",
        "*onediff-nexfort' needs a CUDA device*pip install*",
        "*sd15 is marked gpu and needs a CUDA device*--device cuda*gpu = false*",
    ])
    result = _run(pytester, config, "-m", "gpu", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*sd15/eager/512x512*"])
    assert "tiny-dit" not in result.stdout.str()


def test_markers_are_registered_for_strict_markers(pytester):
    result = pytester.runpytest("--markers")
    for marker in ("quality", "gpu", "slow", "benchmark", "accelgate_tasks"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{marker}*"])
