"""The distribution gate as a user meets it, through pytester: options, both runs, the tables.

Acceptance of issue 3 on a CPU: a backend that adds strong noise fails the distribution gate,
the reference (and a no-op backend) passes, the report has the seed-000 table with every
metric filled (random-weight values, labelled) and the seed-001 per-style table, the CI
narrows as --prompt-limit grows, and a missing weight skips (fails with --strict-metrics).
"""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

TEST_MODULE = (REPO / "tests" / "test_distribution.py").read_text()

CONFIG = """
models = ["tiny-sd"]
backends = ["eager", "identity", "noise"]
baseline_dir = "baselines"

[model.tiny-sd]
resolutions = ["32x32"]

[backend.identity]
factory = "fixtures.example_backends:identity"

[backend.noise]
factory = "fixtures.example_backends:denoiser_noise"
options = {{ sigma = 1.0 }}

[distribution]
{distribution}
"""


@pytest.fixture(scope="module", autouse=True)
def metric_libraries_imported_once():
    """pytester runs in-process and forgets the modules each run imported; C extensions (triton,
    via torchvision.ops -> torch._dynamo) abort when imported a second time. Import them here."""
    import importlib

    for name in ("torch._dynamo", "torchvision.ops", "open_clip", "lpips", "torchmetrics.image.fid",
                 "torchmetrics.image.kid", "torch_fidelity.metric_isc", "scipy.stats", "skimage.metrics",
                 "diffusers", "accelgate.distribution.run", "accelgate.metrics.offline"):
        importlib.import_module(name)


@pytest.fixture
def project(pytester):
    pytester.syspathinsert(REPO)  # fixtures.example_backends, by factory path
    # A basename of its own: the suite's tests/test_distribution.py is already imported in this process.
    pytester.makepyfile(test_inner_distribution=TEST_MODULE)

    def make(distribution):
        path = pytester.path / "accelgate.toml"
        path.write_text(CONFIG.format(distribution=distribution))
        return path

    return make


def _run(pytester, config, *args):
    return pytester.runpytest("-p", "no:cacheprovider", "--accelgate-config", str(config), *args)


def _cases(out: Path) -> dict:
    data = json.loads((out / "results.json").read_text())
    return {case["id"]: case for case in data["distribution"]["cases"]}


def test_prompt_limit_must_be_a_positive_number(pytester, project):
    config = project("")
    for bad in ("0", "many"):
        result = _run(pytester, config, "--prompt-limit", bad)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*--prompt-limit*>= 1*"])


def test_unknown_model_in_the_distribution_table_is_a_usage_error(pytester, project):
    result = _run(pytester, project('cpu_run = { models = ["tiny-foo"] }'))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*accelgate.toml, ?distribution?: cpu_run.models: 'tiny-foo' not in the matrix; known: tiny-sd*"])


def test_regen_baselines_runs_no_distribution_case(pytester, project):
    config = project('cpu_run = { models = ["tiny-sd"], backends = ["eager", "noise"] }')
    result = _run(pytester, config, "--regen-baselines")
    result.assert_outcomes(deselected=3)  # two CPU-run cases and the empty prompt-set run


def test_cpu_metric_run_fails_noise_passes_reference_and_writes_the_seed_table(pytester, project):
    config = project('cpu_run = { models = ["tiny-sd"], backends = ["eager", "identity", "noise"] }')
    out = pytester.path / "out"
    result = _run(pytester, config, "-m", "quality and not slow", "--quality-report", str(out), "-v")
    result.assert_outcomes(passed=2, failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*test_distribution_metrics_cpu?tiny-sd/noise/32x32? FAILED*",
                                 "*distribution gate failed vs the reference backend 'eager' on 4 prompts*lpips*",
                                 "*values from random-weight metric models*"])
    summary = (out / "summary.md").read_text()
    assert "### tiny-sd @ 32x32 (CPU metric run)" in summary
    assert "| Metric | eager (reference) | identity | noise |" in summary
    rows = {line.split(" | ")[0].strip("| "): line for line in summary.splitlines() if line.startswith("| ")}
    labels = ("FID ⬇️ (vs reference images)", "IS ⬆️", "CLIP Score ⬆️", "Aesthetic Score ⬆️", "HPS v2 ⬆️", "SSIM ⬆️",
              "KID ⬇️ (vs reference images)", "LPIPS ⬇️ (vs reference images)")
    for label in labels:
        assert "n/a" not in rows[label], rows[label]  # every metric filled
    assert "†" in rows["CLIP Score ⬆️"] and "Random-weight metric models" in summary
    assert rows["SSIM ⬆️"].split(" | ")[1] == "-"  # the reference against itself: '-' as in seed 000
    assert "❌" in rows["LPIPS ⬇️ (vs reference images)"]
    cases = _cases(out)
    assert cases["tiny-sd/noise/32x32"]["outcome"] == "failed" and cases["tiny-sd/noise/32x32"]["random_weights"]
    assert cases["tiny-sd/noise/32x32"]["metrics"]["lpips"]["passed"] is False
    assert cases["tiny-sd/identity/32x32"]["metrics"]["lpips"]["ci"] == [0.0, 0.0]


@pytest.fixture
def hpd_bench(pytester):
    """A local HPD v2 benchmark folder: four style files of prompt strings, as published."""
    bench = pytester.path / "hpd" / "benchmark"
    bench.mkdir(parents=True)
    for style in ("anime", "concept-art", "paintings", "photo"):
        (bench / f"{style}.json").write_text(json.dumps([f"{style} picture of a {thing}" for thing in (
            "cat", "dog", "house", "tree", "car", "boat")]))
    return bench


def test_prompt_set_run_interval_narrows_with_prompt_limit_and_hps_per_style(pytester, project, hpd_bench):
    config = project(f'metric_models = "random"\nmodels = ["tiny-sd"]\nbackends = ["eager", "noise"]\n'
                     f'prompt_sets = {{ tiny-sd = "hpdv2:{hpd_bench}" }}')
    widths = {}
    for limit in ("4", "24"):
        out = pytester.path / f"out-{limit}"
        result = _run(pytester, config, "-m", "quality and slow", "--prompt-limit", limit, "--quality-report", str(out))
        result.assert_outcomes(passed=1, failed=1, deselected=1)
        checks = _cases(out)["tiny-sd/noise/32x32"]["metrics"]
        widths[limit] = {name: checks[name]["ci"][1] - checks[name]["ci"][0] for name in ("clip_score", "aesthetic",
                                                                                           "hps", "ssim", "lpips")}
    for name, narrow in widths["24"].items():  # t on 4 prompts, bootstrap BCa on 24
        assert narrow < widths["4"][name] / (2 if name != "lpips" else 1), (name, widths)
    summary = (out / "summary.md").read_text()
    assert "(prompt-set run)" in summary and "HPD v2 benchmark prompts" in summary
    assert "| Backend | Paintings | Photo | Concept-Art | Anime | Average |" in summary
    assert "| eager (reference) | " in summary.split("#### HPS v2 per style")[1]


def test_missing_weights_skip_with_the_file_name_and_fail_with_strict_metrics(pytester, project, empty_caches):
    config = project('models = ["tiny-sd"]\nbackends = ["noise"]\nmetrics = ["fid", "lpips"]')
    result = _run(pytester, config, "-m", "quality and slow", "-rs")
    result.assert_outcomes(skipped=1, deselected=1)
    result.stdout.fnmatch_lines(["*weights-inception-2015-12-05-6726825d.pth*"])
    result = _run(pytester, config, "-m", "quality and slow", "--strict-metrics")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*alexnet-owt-7be5be79.pth*", "*--strict-metrics: a missing metric weight*"])
