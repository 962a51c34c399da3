"""The per-image gate's pytest side: the `accelgate` fixture, setup-time skips in the report,
per-step progress on an interactive terminal, each case's images as pytest-html extras, and
the gate's terminal summary. The flow itself is `accelgate.quality.run`.
"""
from __future__ import annotations

import base64
import sys
import warnings
from pathlib import Path

import pytest

from accelgate.plugin import STATE
from accelgate.quality import report  # noqa: F401  (registers the gate's report section)
from accelgate.quality.lifecycle import change_line, find_orphans, prune
from accelgate.quality.run import QualityRun
from accelgate.progress import TerminalProgress, wanted
from accelgate.report.terminal import outcome_lines, write_lines
from accelgate.selftest import selftest_lines
from accelgate.session import raise_case_error
from accelgate.verdict import count_outcomes, problem, shown_path

QUALITY = pytest.StashKey[QualityRun]()


class ApplyFinding(UserWarning):
    """A quality case passed but needs a look: a backend that declares it changes the numerics
    made the reference's float images bit for bit (--accelgate-strict-apply makes it a failure)."""


@pytest.hookimpl(trylast=True)  # after accelgate.plugin has built the session
def pytest_configure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    option = config.option
    baseline_dir = Path(option.baseline_dir).resolve() if option.baseline_dir else None
    run = QualityRun(state.session, baseline_dir, state.report_dir, option.regen_baselines, state.command_options(),
                     selftest=option.accelgate_selftest, strict_apply=option.accelgate_strict_apply)
    config.stash[QUALITY] = run
    state.add_part("quality", lambda: run.report_part() if run.results else None, record=run.record_missing)
    state.session.progress = terminal_progress(config)


def terminal_progress(config: pytest.Config) -> TerminalProgress | None:
    """Step progress for a person at a terminal (see accelgate.progress); None in CI, in a pipe,
    on an xdist worker (it has no terminal) and without pytest's terminal reporter."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or hasattr(config, "workerinput") or not wanted(reporter.isatty):
        return None
    writer = config.get_terminal_writer()

    def write(text: str) -> None:
        sys.stdout.write(text)  # the real stream: capture is suspended around this call
        sys.stdout.flush()

    return TerminalProgress(write, capture.global_and_fixture_disabled,
                            lambda: writer.fullwidth - writer.width_of_current_line)


class QualityFixture:
    """What a test module sees: ask for a verdict; a skip outcome becomes a pytest skip."""

    def __init__(self, run: QualityRun):
        self.run = run

    def verdict(self, case):
        verdict = self.run.evaluate(case)
        if verdict.outcome == "skipped":
            pytest.skip(verdict.reason)
        raise_case_error(verdict)
        if verdict.passed:
            for finding in verdict.findings:
                warnings.warn(ApplyFinding(f"{case.id}: {finding}"), stacklevel=2)
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
    if case is None or not item.get_closest_marker("quality") or item.get_closest_marker("slow") \
            or item.get_closest_marker("benchmark"):
        return report
    run = item.config.stash[QUALITY]
    if call.when == "setup" and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        run.results.append(problem(case, "skipped", reason.removeprefix("Skipped: ")))
    elif call.when == "call" and getattr(item.config.option, "htmlpath", None):
        verdict = next((v for v in reversed(run.results) if v.case_id == case.id), None)
        if verdict is not None:
            report.extras = getattr(report, "extras", []) + html_extras(verdict)
    return report


def html_extras(verdict) -> list[dict]:
    """pytest-html extras: every image of the case, candidate / baseline / diff, embedded as
    base64 (pytest-html writes them beside its report, or inlines them with
    --self-contained-html), so the HTML report shows what the gate judged."""
    from pytest_html import extras

    attached = []
    for index, image in enumerate(verdict.images):
        for kind in ("candidate", "baseline", "diff"):
            path = Path(verdict.image_root or "", getattr(image, kind))
            if getattr(image, kind) and path.is_file():
                attached.append(extras.png(base64.b64encode(path.read_bytes()).decode("ascii"),
                                           f"{index:02d} {kind}"))
    return attached


@pytest.hookimpl(tryfirst=True)  # before accelgate.plugin writes the report
def pytest_sessionfinish(session: pytest.Session) -> None:
    """--prune-baselines (the controller only): remove the orphaned baselines, say which."""
    config = session.config
    run = config.stash.get(QUALITY, None)
    if run is None or not config.option.prune_baselines or hasattr(config, "workerinput"):
        return
    run.pruned = prune(find_orphans(run.baseline_dir, run.config))


def baseline_lines(run: QualityRun) -> list[tuple[str, bool]]:
    """(line, needs attention) for the baseline store: pruned or orphaned baselines."""
    pruned = run.pruned
    if pruned is not None:
        return [(f"baseline pruned: {o.line()}", False) for o in pruned] or [("--prune-baselines: no orphaned baseline", False)]
    orphans = find_orphans(run.baseline_dir, run.config)
    return [(f"ORPHANED baseline {o.line()}; remove with --prune-baselines", True) for o in orphans]


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """The gate's cases grouped by outcome, failures first with their images' paths (relative
    to the current directory, so they open from where pytest ran), then what needs a person."""
    state = config.stash.get(STATE, None)
    part = state.parts().get("quality") if state is not None else None
    run = config.stash.get(QUALITY, None)
    store_lines = baseline_lines(run) if run is not None and (part or config.option.prune_baselines) else []
    if not part:
        if store_lines:
            terminalreporter.section("accelgate")
            for line, attention in store_lines:
                terminalreporter.write_line(line, yellow=attention)
        return
    write = terminalreporter.write_line
    terminalreporter.section("accelgate")
    for line, attention in store_lines:
        write(line, yellow=attention)
    from accelgate.machine import device_class

    device = state.session.device
    na = len(part.get("not_applicable", []))
    write(f"device {device} (baselines: {device_class(device)}); cases: "
          + ", ".join(f"{n} {k}" for k, n in sorted(count_outcomes(part["cases"]).items()))
          + f"; {na} combinations n/a (see the report)")
    write_lines(terminalreporter, outcome_lines(part["cases"], state.report_dir))
    for case in part["cases"]:
        if case.get("reference") and case["outcome"] == "failed" and case.get("metrics"):
            write(f"REFERENCE DRIFT {case['id']}: {case['reason'].splitlines()[0]}", red=True)
    for line in selftest_lines(part["cases"]) if config.option.accelgate_selftest else ():
        write(line, red="MISSED" in line, green="MISSED" not in line)
    for case in part["cases"]:
        for finding in case.get("findings", []) if case["outcome"] == "passed" else ():
            write(f"FINDING {case['id']}: {finding}", yellow=True)
    for model, why in sorted(part.get("stale_models", {}).items()):
        write(f"STALE {model}: {why}", red=True)
    for path in part.get("written_baselines", []):
        write(f"baseline written: {path}")
    for change in part.get("regen_changes", []):
        write(f"regen {change_line(change)}", yellow=change["change"] == "changed")
    if state.report_dir is not None and state.results is not None:
        write(f"report: {shown_path(state.report_dir / 'index.html')} (summary.md and results.json beside it; "
              f"re-render with: python -m accelgate.report {shown_path(state.report_dir)})")
