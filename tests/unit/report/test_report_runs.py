"""The report as a user meets it across runs and processes (issue 7's acceptance):
a quality run then a speed run into one directory keep both; `-n 2` gives the serial run's
cases in one report; a repository that runs no accelgate case imports no torch."""
import json
from importlib import metadata
from pathlib import Path

import pytest

# pytester runs pytest in this process and afterwards drops every module a run imported;
# torch, triton's C extension (pulled in by dynamo) and torchao cannot be imported twice.
import torch._dynamo  # noqa: F401,E402
import torch._inductor.utils  # noqa: F401,E402
from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel  # noqa: F401,E402

REPO = Path(__file__).resolve().parents[3]
CONFIG = """
models = ["tiny-dit"]
backends = ["eager", "channels-last", "bf16"]
[model.tiny-dit]
steps = 3
resolutions = ["32x32"]
[speed]
rounds = 1
warmup_rounds = 0
"""
MODULES = {
    "test_quality": """
import pytest
pytestmark = [pytest.mark.quality]

def test_case(accelgate, accelgate_case):
    verdict = accelgate.verdict(accelgate_case)
    assert verdict.passed, verdict.message
""",
    "test_inner_speed": (REPO / "tests" / "test_speed.py").read_text(),
}


@pytest.fixture
def project(pytester):
    pytester.makepyfile(**MODULES)
    config = pytester.path / "accelgate.toml"
    config.write_text(CONFIG)
    return config


def _run(pytester, config, *args, subprocess=False):
    run = pytester.runpytest_subprocess if subprocess else pytester.runpytest
    return run("-p", "no:cacheprovider", f"--accelgate-config={config}", *args)


def _ids(out: Path, key=None) -> dict[str, str]:
    data = json.loads((out / "results.json").read_text())
    part = data if key is None else data[key]
    return {c["id"]: c["outcome"] for c in part["cases"]}


def test_a_quality_run_then_a_speed_run_into_one_report_keep_both(pytester, project):
    _run(pytester, project, "--regen-baselines").assert_outcomes(passed=1, deselected=5)
    out = pytester.path / "out"
    _run(pytester, project, "-m", "quality", f"--quality-report={out}").assert_outcomes(passed=3, deselected=3)
    _run(pytester, project, "-m", "benchmark", "--backends=eager", f"--quality-report={out}").assert_outcomes(
        passed=1, deselected=1)
    data = json.loads((out / "results.json").read_text())
    assert _ids(out) == dict.fromkeys(["tiny-dit/eager/32x32", "tiny-dit/channels-last/32x32",
                                       "tiny-dit/bf16/32x32"], "passed")
    assert [c["id"] for c in data["speed"]["cases"]] == ["tiny-dit/eager/32x32"]
    assert len(data["runs"]) == 2 and {c["run_id"] for c in data["cases"]} == {data["runs"][0]["id"]}
    assert data["speed"]["cases"][0]["run_id"] == data["runs"][1]["id"]
    assert data["run"]["versions"]["accelgate"] == metadata.version("accelgate")  # the installed plugin's
    summary = (out / "summary.md").read_text()
    assert f"accelgate `{metadata.version('accelgate')}`" in summary
    assert "## tiny-dit @ 32x32" in summary and "## Speed (pytest-benchmark)" in summary
    assert "This report merges 2 runs" in summary and (out / "speed.md").is_file()


def test_a_run_with_another_config_is_refused_before_it_starts(pytester, project):
    out = pytester.path / "out"
    _run(pytester, project, "-m", "quality", "--regen-baselines", f"--quality-report={out}")
    project.write_text(CONFIG.replace("steps = 3", "steps = 4"))
    result = _run(pytester, project, "-m", "quality", f"--quality-report={out}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*results.json holds cases of a run with another config_sha256*"])


def test_two_xdist_workers_give_the_serial_runs_cases_in_one_report(pytester, project):
    _run(pytester, project, "--regen-baselines").assert_outcomes(passed=1, deselected=5)
    serial, parallel = pytester.path / "serial", pytester.path / "parallel"
    _run(pytester, project, "-m", "quality", f"--quality-report={serial}", subprocess=True).assert_outcomes(passed=3)
    result = _run(pytester, project, "-m", "quality", "-n", "2", f"--quality-report={parallel}", subprocess=True)
    result.assert_outcomes(passed=3)
    assert _ids(parallel) == _ids(serial) and len(_ids(serial)) == 3
    assert result.stdout.str().count("== accelgate ==") == 1  # one summary, the controller's
    results = json.loads((parallel / "results.json").read_text())
    assert len(results["runs"]) == 1
    # issue 12: each worker's device and device class are recorded (one GPU each under --device cuda)
    assert results["run"]["workers"] == {f"gw{i}": {"device": "cpu", "device_class": "cpu"} for i in range(2)}


def test_a_repository_that_runs_no_accelgate_case_imports_no_torch(pytester, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    pytester.makepyfile(test_unrelated="def test_one():\n    assert 1 + 1 == 2\n")
    pytester.makeconftest("""
import json, os, sys

def pytest_unconfigure(config):
    with open("modules.json", "w") as handle:
        json.dump({"torch": "torch" in sys.modules, "diffusers": "diffusers" in sys.modules,
                   "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE"),
                   "accelgate": "accelgate.plugin" in sys.modules}, handle)
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    seen = json.loads((pytester.path / "modules.json").read_text())
    assert seen == {"torch": False, "diffusers": False, "HF_HUB_OFFLINE": None, "accelgate": True}
