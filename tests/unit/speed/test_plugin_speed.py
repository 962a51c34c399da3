"""The speed run as a user meets it, through pytester: autosave, compare, compare-fail, the
missing-baseline message, the machine-mismatch warning, the seed-004 table, and the
separation of quality and speed runs.

Comparisons run on a fake backend that sleeps 0.3 s in each of its 3 denoiser calls, next to
~10-20 ms of compute per generation: a median moves by 10% only if contention adds 90 ms to
all the rounds of one run, so "unchanged passes" is a statement about the suite, not about
the machine's mood. The planted slowdown sleeps 0.45 s instead (+50%).
"""
import json
from pathlib import Path

import pytest

# pytester runs pytest in this process and afterwards drops every module a run imported.
# Some cannot be imported twice (triton's C extension, pulled in by dynamo, aborts; torchao,
# pulled in by diffusers' VAE, registers its ops again): import them once, here.
import torch._dynamo  # noqa: F401,E402
import torch._inductor.utils  # noqa: F401,E402
from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel  # noqa: F401,E402

REPO = Path(__file__).resolve().parents[3]

QUALITY_MODULE = """
import pytest
pytestmark = [pytest.mark.quality]

def test_case(accelgate, accelgate_case):
    verdict = accelgate.verdict(accelgate_case)
    assert verdict.passed, verdict.message
"""


def config_text(accel_delay=0.3, backends=("base", "accel"), extra="", speed="", accel=None):
    """tiny-dit at 32x32, 3 steps; `base` (the reference) and `accel` sleep in the denoiser.
    Every [backend.X] table joins the matrix, so only the listed ones are declared."""
    tables = {
        "base": 'factory = "fixtures.speed_backends:sleepy"\noptions = {delay = 0.3}',
        "accel": f'factory = "fixtures.speed_backends:sleepy"\noptions = {{delay = {accel_delay}}}',
        "recomp": 'factory = "fixtures.speed_backends:recompiler"\nrecompile_budget = 2',
    }
    if accel is not None:  # another factory behind the name `accel`
        tables["accel"] = accel
    declared = "\n".join(f"[backend.{name}]\n{tables[name]}" for name in backends)
    return f"""
models = ["tiny-dit"]
backends = {json.dumps(list(backends))}
reference = "base"
baseline_dir = "baselines"
[model.tiny-dit]
steps = 3
resolutions = ["32x32"]
{declared}
{extra}
{speed}
"""


@pytest.fixture
def project(pytester):
    pytester.syspathinsert(REPO)  # fixtures.speed_backends, by factory path
    # A basename of its own: the suite's tests/test_speed.py is already imported in this process.
    pytester.makepyfile(test_inner_speed=(REPO / "tests" / "test_speed.py").read_text())

    def write(text):
        path = pytester.path / "accelgate.toml"
        path.write_text(text)
        return path

    return write


def run(pytester, config, *args):
    return pytester.runpytest("-p", "no:cacheprovider", "--accelgate-config", str(config), "-m", "benchmark", *args)


def saved_runs(pytester):
    return sorted((pytester.path / ".benchmarks").glob("*/*.json"))


EXTRA_INFO_KEYS = {"model", "backend", "resolution", "it_per_s", "e2e_s", "peak_mem_bytes", "peak_mem_api",
                   "cold_warmup_s", "warm_warmup_s", "recompiles", "recompiles_total", "recompile_budget"}


def test_autosave_then_compare_passes_unchanged_and_fails_on_a_planted_slowdown(pytester, project):
    config = project(config_text())
    saved = run(pytester, config, "--benchmark-autosave", "--quality-report", "out")
    saved.assert_outcomes(passed=2)
    [path] = saved_runs(pytester)
    data = json.loads(path.read_text())
    assert len(data["benchmarks"]) == 2
    for bench in data["benchmarks"]:
        assert EXTRA_INFO_KEYS <= set(bench["extra_info"]), bench["fullname"]
        assert all(bench["extra_info"][k] is not None for k in EXTRA_INFO_KEYS)
        assert bench["stats"]["rounds"] == 3  # [speed] rounds default
    assert data["machine_info"]["accelgate"]["versions"]["diffusers"]
    assert "device_class" in data["machine_info"]["accelgate"]

    # the seed-004 table: speed.md, and results.json["speed"] of a speed-only run
    table = (pytester.path / "out" / "speed.md").read_text()
    assert "## tiny-dit" in table and "| Metric | base, 32x32 | accel, 32x32 |" in table
    for row in ("Iteration speed", "E2E time", "Max Mem Used", "Warmup with Compilation time", "Warmup with Cache time"):
        assert f"| {row} |" in table
    assert "it/s (" in table  # accel's cells carry a change in % against the reference
    results = json.loads((pytester.path / "out" / "results.json").read_text())
    assert results["cases"] == []  # no quality verdicts from a speed run
    assert results["speed"]["reference"] == "base" and len(results["speed"]["cases"]) == 2
    assert not (pytester.path / "baselines").exists()

    same = run(pytester, config, "--benchmark-compare", "--benchmark-compare-fail=median:10%")
    same.assert_outcomes(passed=2)
    assert same.ret == 0
    assert "Performance has regressed" not in same.stdout.str() + same.stderr.str()

    config = project(config_text(accel_delay=0.45))  # planted slowdown: +50% per denoiser call
    slower = run(pytester, config, "--benchmark-compare", "--benchmark-compare-fail=median:10%")
    assert slower.ret != 0
    output = slower.stdout.str() + slower.stderr.str()
    assert "Performance has regressed" in output
    assert "tiny-dit/accel/32x32" in output and "tiny-dit/base/32x32 - Field" not in output


def test_compare_without_a_saved_run_says_what_to_run_first(pytester, project):
    config = project(config_text())
    result = run(pytester, config, "--benchmark-compare", "--benchmark-compare-fail=median:10%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*--benchmark-compare found no saved benchmark run in*",
        "*Save a baseline run first*",
        f"*pytest -m benchmark --accelgate-config={config} --benchmark-autosave",
        "*then compare against it:",
        "*pytest -m benchmark --accelgate-config=* --benchmark-compare --benchmark-compare-fail=median:10%",
    ])


@pytest.mark.filterwarnings("ignore:Benchmark machine_info is different")  # pytest-benchmark's own, one huge line
def test_compare_against_a_run_from_another_gpu_warns_naming_both(pytester, project):
    config = project(config_text(backends=("base",)))
    run(pytester, config, "--benchmark-autosave").assert_outcomes(passed=1)
    [path] = saved_runs(pytester)
    data = json.loads(path.read_text())
    data["machine_info"]["accelgate"].update(device_class="cuda", gpu_name="NVIDIA GeForce RTX 3090", driver="550.54")
    path.write_text(json.dumps(data))
    result = run(pytester, config, "--benchmark-compare")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*MACHINE MISMATCH: speed and memory are compared across different hardware.*",
        "*saved run:   GPU 'NVIDIA GeForce RTX 3090' (driver 550.54)*",
        "*current run: CPU *",
    ])
    assert result.stdout.str().count("MACHINE MISMATCH") >= 2  # at start and again in the summary


def test_a_backend_over_its_recompile_budget_fails_its_case(pytester, project):
    config = project(config_text(backends=("base", "recomp")))
    result = run(pytester, config, "-k", "recomp")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*tiny-dit/recomp recompiled * time(s) across its resolutions this session*"
                                 "budget 2 (declared recompile_budget = 2)*"])


def test_floors_naming_unknown_backends_are_usage_errors(pytester, project):
    config = project(config_text(speed='[speed]\nfloors = [{backend = "acel", min_speedup = 1.2}]'))
    result = run(pytester, config)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*floors: backend 'acel' is not in the matrix; backends: base, accel*"])


def test_quality_and_speed_runs_stay_apart(pytester, project):
    pytester.makepyfile(test_quality=QUALITY_MODULE)
    config = project(config_text(backends=("base",)))
    quality = pytester.runpytest("-p", "no:cacheprovider", "--accelgate-config", str(config), "-m", "quality",
                                 "--collect-only", "-q")
    assert "test_inner_speed" not in quality.stdout.str() and "test_quality.py::test_case" in quality.stdout.str()
    regen = pytester.runpytest("-p", "no:cacheprovider", "--accelgate-config", str(config), "--regen-baselines")
    regen.assert_outcomes(passed=1, deselected=1)  # the baseline is written, the speed case is not run
    assert not (pytester.path / ".benchmarks").exists() or not saved_runs(pytester)


def test_speed_cases_skip_where_pytest_benchmark_is_disabled(pytester, project):
    """pytest-benchmark disables itself under xdist (and with --benchmark-disable): a speed
    case then measures nothing and says how to run it instead of passing empty."""
    config = project(config_text(backends=("base",)))
    result = run(pytester, config, "--benchmark-disable", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*pytest-benchmark is disabled here*pytest -m benchmark -p no:xdist*"])


def test_compare_fail_catches_a_planted_memory_growth_and_an_unchanged_run_passes(pytester, project):
    """--accelgate-compare-fail judges what pytest-benchmark's own compare does not: peak memory
    and warmups against the saved run."""
    limits = "--accelgate-compare-fail=peak_mem:10%,cold_warmup:25%"
    config = project(config_text())
    run(pytester, config, "--benchmark-autosave").assert_outcomes(passed=2)
    same = run(pytester, config, "--benchmark-compare", limits, "--quality-report=out")
    same.assert_outcomes(passed=2)
    table = (pytester.path / "out" / "speed.md").read_text()
    assert "## Compared with the saved run" in table and "| tiny-dit/accel/32x32 | peak_mem |" in table
    assert "❌" not in table

    leaking = project(config_text(accel='factory = "fixtures.speed_backends:leaky"\noptions = {mib = 32}'))
    grown = run(pytester, leaking, "--benchmark-compare", limits, "--quality-report=out-leaking")  # other config
    grown.assert_outcomes(passed=1, failed=1)
    grown.stdout.fnmatch_lines(["*peak_mem (peak_mem_bytes) grew *% against saved run 0001_*, limit 10%*"])
    table = (pytester.path / "out-leaking" / "speed.md").read_text()
    assert "| tiny-dit/accel/32x32 | peak_mem |" in table and "❌" in table


def test_compare_fail_needs_a_run_to_compare_with(pytester, project):
    config = project(config_text())
    result = run(pytester, config, "--accelgate-compare-fail=peak_mem:10%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--accelgate-compare-fail compares with a saved run and needs --benchmark-compare*"])
    result = run(pytester, config, "--accelgate-compare-fail=peak_memory:10%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown field 'peak_memory'; fields: it_per_s, e2e, peak_mem, peak_mem_abs*"])
