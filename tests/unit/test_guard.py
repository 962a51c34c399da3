"""Issue 9's cases that misbehave, as a user runs them: a backend that changes process-wide state,
one that leaves what cannot be restored, one that hangs, crashes, exits, is interrupted or runs
out of memory; and report directories that refuse to be written. Each message must name the
cause, every other case must run and pass, and no baseline or report may be lost."""
import errno
import json
import os
from pathlib import Path

import pytest

# pytester's in-process runs drop what they imported; these cannot be imported twice
import torch._dynamo  # noqa: F401,E402
import torch._inductor.utils  # noqa: F401,E402
from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel  # noqa: F401,E402

import accelgate.quality.run  # noqa: F401,E402  (imported before any inner run, so monkeypatch reaches the
import accelgate.report.writer  # noqa: F401,E402  module the inner runs use, not one a run dropped)

REPO = Path(__file__).resolve().parents[2]
TEST_MODULE = """
import pytest
pytestmark = [pytest.mark.quality, pytest.mark.accelgate_tasks("class-conditional", "text-to-image")]

def test_case(accelgate, accelgate_case):
    verdict = accelgate.verdict(accelgate_case)
    assert verdict.passed, verdict.message
"""


def _config(backends, extra=""):
    tables = "\n".join(f'[backend.{name}]\nfactory = "fixtures.faulty_backends:{function}"'
                       for name, function in backends.items() if function)
    identity = '[backend.identity]\nfactory = "fixtures.example_backends:identity"\n' if "identity" in backends else ""
    return (f'models = ["tiny-dit"]\nbackends = {json.dumps(list(backends))}\nbaseline_dir = "baselines"\n'
            f'[model.tiny-dit]\nsteps = 3\nresolutions = ["32x32"]\n{tables}\n{identity}' + extra)


@pytest.fixture(autouse=True)
def fixtures_importable(pytester, monkeypatch):
    """fixtures.* by factory path, in this process and in the runs' subprocesses (and their children)."""
    pytester.syspathinsert(REPO)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))


@pytest.fixture
def project(pytester):
    pytester.makepyfile(test_matrix=TEST_MODULE)

    def make(backends, extra=""):
        path = pytester.path / "accelgate.toml"
        path.write_text(_config(backends, extra))
        return path

    return make


def _run(pytester, config, *args, subprocess=False, **kwargs):
    run = pytester.runpytest_subprocess if subprocess else pytester.runpytest
    return run("-p", "no:cacheprovider", f"--accelgate-config={config}", *args, **kwargs)


def _cases(out: Path) -> dict:
    return {c["id"]: c for c in json.loads((out / "results.json").read_text())["cases"]}


def _regen(pytester, config):
    _run(pytester, config, "--regen-baselines").assert_outcomes(passed=1, deselected=_count(config) - 1)


def _count(config):
    return len(json.loads(config.read_text().split("\n")[1].split("=", 1)[1]))


def test_backends_that_patch_globals_are_reported_and_every_other_case_passes(pytester):
    """The acceptance matrix as a user runs it: fixtures/global_state.toml, the culprits first."""
    pytester.makepyfile(test_matrix=TEST_MODULE)
    out = pytester.path / "out"
    # baselines of this environment's tiny models (the committed ones are tied to the CI's versions)
    common = ("-p", "no:cacheprovider", f"--accelgate-config={REPO / 'fixtures' / 'global_state.toml'}",
              "--models=tiny-dit,tiny-sd", "--resolutions=32x32", f"--baseline-dir={pytester.path / 'baselines'}")
    pytester.runpytest_subprocess(*common, "--regen-baselines").assert_outcomes(passed=2)
    result = pytester.runpytest_subprocess(*common, f"--quality-report={out}", "-W", "default")
    cases = _cases(out)
    for model in ("tiny-dit", "tiny-sd"):
        for backend in ("eager", "identity", "channels-last"):
            assert cases[f"{model}/{backend}/32x32"]["outcome"] == "passed", cases[f"{model}/{backend}/32x32"]
        changed = {b: "\n".join(f"{c['what']}: {c['before']} -> {c['after']}" for c in
                                cases[f"{model}/{b}/32x32"].get("state_changes", []))
                   for b in ("patch-denoiser-class", "meta-device", "global-flags")}
        denoiser = "DiTTransformer2DModel" if model == "tiny-dit" else "UNet2DConditionModel"
        assert f"{denoiser}.forward: {denoiser}.forward" in changed["patch-denoiser-class"]
        assert "instrumented_forward (fixtures.faulty_backends)" in changed["patch-denoiser-class"]
        assert "torch default device (torch.set_default_device): not set (cpu) -> 'meta'" in changed["meta-device"]
        assert "torch.backends.mkldnn.enabled: True -> False" in changed["global-flags"]
        assert "flush denormal (torch.set_flush_denormal): False -> True" in changed["global-flags"]
        assert all(c["restored"] for b in ("patch-denoiser-class", "meta-device", "global-flags")
                   for c in cases[f"{model}/{b}/32x32"]["state_changes"])
        assert "state_changes" not in cases[f"{model}/eager/32x32"]
    result.stdout.fnmatch_lines(["*ProcessStateChanged: tiny-dit/meta-device/32x32: backend 'meta-device' changed "
                                 "process-wide state; accelgate restored it after the case:*"])
    assert "REFERENCE DRIFT" not in result.stdout.str()


def test_state_that_cannot_be_restored_fails_later_cases_as_victims_naming_the_culprit(pytester, project):
    config = project({"eager": None, "dispatch-mode": "leave_dispatch_mode", "identity": None})
    _regen(pytester, config)
    out = pytester.path / "out"
    result = _run(pytester, config, f"--quality-report={out}", "-W", "default", subprocess=True)
    result.assert_outcomes(passed=2, failed=1)
    cases = _cases(out)
    assert cases["tiny-dit/eager/32x32"]["outcome"] == "passed"
    assert cases["tiny-dit/dispatch-mode/32x32"]["outcome"] == "passed"  # its own images are fine
    lost = [c for c in cases["tiny-dit/dispatch-mode/32x32"]["state_changes"] if not c["restored"]]
    assert [c["what"] for c in lost] == ["torch dispatch modes"]
    victim = cases["tiny-dit/identity/32x32"]
    assert victim["outcome"] == "failed"
    assert "did not run: process-wide state still differs from the session's start, changed by " \
           "tiny-dit/dispatch-mode/32x32 and not restorable from Python" in victim["reason"]
    assert "--accelgate-isolate" in victim["reason"]


def test_a_hanging_case_is_named_and_the_report_so_far_is_written(pytester, project):
    config = project({"eager": None, "hang": "hang", "identity": None})
    _regen(pytester, config)
    out = pytester.path / "out"
    result = _run(pytester, config, f"--quality-report={out}", "--case-timeout=4", subprocess=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stderr.fnmatch_lines(["*accelgate: TIMEOUT tiny-dit/hang/32x32 ran past its time limit of 4 s*"
                                 f"the report so far is in {out}*"])
    data = json.loads((out / "results.json").read_text())
    cases = {c["id"]: c for c in data["cases"]}
    assert cases["tiny-dit/eager/32x32"]["outcome"] == "passed"
    assert cases["tiny-dit/hang/32x32"]["outcome"] == "error" and "time limit of 4 s" in cases["tiny-dit/hang/32x32"]["reason"]
    assert data["interrupted"] is True and [c["id"] for c in data["not_run"]] == ["tiny-dit/identity/32x32"]
    assert "**Interrupted**" in (out / "summary.md").read_text()


def test_isolated_cases_survive_a_crash_and_a_hang_and_the_session_goes_on(pytester, project):
    config = project({"eager": None, "crash": "crash", "hang": "hang"})
    _regen(pytester, config)
    out = pytester.path / "out"
    # the limit counts from the fork: the forkserver imports torch and diffusers before it
    result = _run(pytester, config, "--accelgate-isolate", "--case-timeout=30", f"--quality-report={out}",
                  subprocess=True)
    result.assert_outcomes(passed=1, failed=2)
    cases = _cases(out)
    assert cases["tiny-dit/eager/32x32"]["outcome"] == "passed"
    assert cases["tiny-dit/crash/32x32"]["outcome"] == "error"
    assert "died without a result (signal SIGSEGV)" in cases["tiny-dit/crash/32x32"]["reason"]
    assert cases["tiny-dit/hang/32x32"]["outcome"] == "error"
    assert "ran past its time limit of 30 s" in cases["tiny-dit/hang/32x32"]["reason"]
    assert "process was killed (--accelgate-isolate)" in cases["tiny-dit/hang/32x32"]["reason"]


@pytest.mark.parametrize("backend, outcome, reason", [
    ("exit_process", "error", "SystemExit at faulty_backends.py:"),
    ("out_of_memory", "oom", "out of memory at 32x32 on cpu (process peak RSS"),
])
def test_exit_and_out_of_memory_are_that_cases_outcome_and_the_session_goes_on(pytester, project, backend, outcome,
                                                                               reason):
    config = project({"eager": None, "bad": backend, "identity": None})
    _regen(pytester, config)
    out = pytester.path / "out"
    result = _run(pytester, config, f"--quality-report={out}")
    result.assert_outcomes(passed=2, failed=1)
    case = _cases(out)["tiny-dit/bad/32x32"]
    assert case["outcome"] == outcome and reason in case["reason"], case["reason"]
    if backend == "exit_process":
        assert "called sys.exit(3)" in case["reason"]  # it was missing from results.json
    else:
        assert "CUDA out of memory. Tried to allocate 80.00 GiB" in case["reason"]


def test_ctrl_c_marks_the_report_interrupted_and_lists_the_cases_that_did_not_run(pytester, project):
    config = project({"eager": None, "interrupt": "interrupt", "identity": None})
    _regen(pytester, config)
    out = pytester.path / "out"
    _run(pytester, config, f"--quality-report={out}", "-k", "eager").assert_outcomes(passed=1, deselected=2)
    result = _run(pytester, config, f"--quality-report={out}", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    data = json.loads((out / "results.json").read_text())
    cases = {c["id"]: c for c in data["cases"]}
    assert cases["tiny-dit/eager/32x32"]["outcome"] == "passed"  # the earlier run's and this run's: kept
    assert cases["tiny-dit/interrupt/32x32"]["outcome"] == "error"
    assert "interrupted (KeyboardInterrupt" in cases["tiny-dit/interrupt/32x32"]["reason"]
    assert data["interrupted"] is True and data["not_run"] == [
        {"id": "tiny-dit/identity/32x32", "gate": "quality", "test": "test_matrix.py::test_case[tiny-dit/identity/32x32]"}]
    assert "1 collected case(s) did not run: `tiny-dit/identity/32x32`" in (out / "summary.md").read_text()


def test_an_unwritable_or_full_report_directory_is_refused_before_the_run(pytester, project, monkeypatch):
    config = project({"eager": None})
    in_the_way = pytester.path / "a-file"
    in_the_way.write_text("not a directory")
    result = _run(pytester, config, f"--quality-report={in_the_way}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--quality-report={in_the_way}: {in_the_way} is a file, not a directory" in result.stderr.str()
    result = _run(pytester, config, f"--quality-report={in_the_way / 'out'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "cannot write the report there" in result.stderr.str()
    monkeypatch.setattr("accelgate.report.writer.MIN_FREE_BYTES", 2**62)
    result = _run(pytester, config, f"--quality-report={pytester.path / 'out'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "MiB free on its disk" in result.stderr.str()


def test_a_report_that_cannot_be_written_at_the_end_keeps_the_verdicts_and_the_old_report(pytester, project,
                                                                                         monkeypatch):
    config = project({"eager": None, "identity": None})
    _regen(pytester, config)
    out = pytester.path / "out"
    _run(pytester, config, f"--quality-report={out}", "-k", "eager").assert_outcomes(passed=1, deselected=1)
    before = (out / "results.json").read_text()

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("accelgate.report.writer.atomic_write_text", full_disk)
    monkeypatch.setattr("accelgate.quality.run.write_png", lambda path, image: full_disk(path, ""))
    result = _run(pytester, config, f"--quality-report={out}")
    result.assert_outcomes(passed=2)  # passing cases stay passing (they used to become errors)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    assert "accelgate: ERROR could not write the report to" in result.stderr.str()
    assert "No space left on device" in result.stderr.str() and "The verdicts printed above stand" in result.stderr.str()
    assert (out / "results.json").read_text() == before  # the previous report is intact
