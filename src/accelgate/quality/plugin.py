"""The per-image gate's pytest side: the `accelgate` fixture, setup-time skips in the report,
and the gate's terminal summary. The flow itself is `accelgate.quality.run`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from accelgate.plugin import STATE
from accelgate.quality import report  # noqa: F401  (registers the gate's report section)
from accelgate.quality.run import QualityRun
from accelgate.verdict import count_outcomes, problem

QUALITY = pytest.StashKey[QualityRun]()


@pytest.hookimpl(trylast=True)  # after accelgate.plugin has built the session
def pytest_configure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    option = config.option
    baseline_dir = Path(option.baseline_dir).resolve() if option.baseline_dir else None
    run = QualityRun(state.session, baseline_dir, state.report_dir, option.regen_baselines, state.command_options())
    config.stash[QUALITY] = run
    state.add_part("quality", lambda: run.report_part() if run.results else None, record=run.record_missing)


class QualityFixture:
    """What a test module sees: ask for a verdict; a skip outcome becomes a pytest skip."""

    def __init__(self, run: QualityRun):
        self.run = run

    def verdict(self, case):
        verdict = self.run.evaluate(case)
        if verdict.outcome == "skipped":
            pytest.skip(verdict.reason)
        return verdict


@pytest.fixture(scope="session")
def accelgate(request: pytest.FixtureRequest) -> QualityFixture:
    return QualityFixture(request.config.stash[QUALITY])


def _case_of(item: pytest.Item):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("accelgate_case") if callspec else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """A per-image quality case skipped at setup (no CUDA, missing package or weights)
    still appears in results.json and the summary, with its reason."""
    report = yield
    case = _case_of(item)
    if case is not None and call.when == "setup" and report.skipped and item.get_closest_marker("quality") \
            and not item.get_closest_marker("slow") and not item.get_closest_marker("benchmark"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        item.config.stash[QUALITY].results.append(problem(case, "skipped", reason.removeprefix("Skipped: ")))
    return report


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    part = state.parts().get("quality") if state is not None else None
    if not part:
        return
    write = terminalreporter.write_line
    terminalreporter.section("accelgate")
    from accelgate.machine import device_class

    device = state.session.device
    na = len(part.get("not_applicable", []))
    write(f"device {device} (baselines: {device_class(device)}); cases: "
          + ", ".join(f"{n} {k}" for k, n in sorted(count_outcomes(part["cases"]).items()))
          + f"; {na} combinations n/a (see the report)")
    for case in part["cases"]:
        if case.get("reference") and case["outcome"] == "failed" and case.get("metrics"):
            write(f"REFERENCE DRIFT {case['id']}: {case['reason'].splitlines()[0]}", red=True)
    for model, why in sorted(part.get("stale_models", {}).items()):
        write(f"STALE {model}: {why}", red=True)
    for path in part.get("written_baselines", []):
        write(f"baseline written: {path}")
    if state.report_dir is not None and state.results is not None:
        write(f"report: {state.report_dir / 'summary.md'} and {state.report_dir / 'results.json'}")
