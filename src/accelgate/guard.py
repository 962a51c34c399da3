"""What keeps each accelgate case apart and accounted for, around every pytest item:

- the **sandbox** (`accelgate.sandbox`): process-wide state recorded before a case, restored
  after; what a case changed is a `ProcessStateChanged` warning naming its backend and is
  listed with the case in results.json (`state_changes`); a case that starts under state an
  earlier case left and nothing could restore fails as that case's victim, naming it;
- the **time limit** (`accelgate.limits`): a watchdog per case; over the limit it writes the
  report so far, naming the hung case, and ends the run (under `--accelgate-isolate` the
  quality and distribution gates kill the case's process themselves);
- the **record**: every collected case ends up in results.json whatever it raised (a fixture
  error, SystemExit, KeyboardInterrupt, the victim check), and after Ctrl-C the report says
  `"interrupted": true` and lists the cases that did not run.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any

import pytest

from accelgate.config.schema import format_resolution
from accelgate.limits import Watchdog, is_out_of_memory, limit_text, out_of_memory_reason
from accelgate.plugin import STATE, case_param, write_final_report
from accelgate.session import describe_error

ISOLATED_GATES = ("quality", "distribution")  # run in a child process under --accelgate-isolate
WATCHDOG_MARGIN_S = 60.0  # over an isolated case's own limit: the parent itself hangs only if something else does


class ProcessStateChanged(UserWarning):
    """A case changed process-wide state; accelgate restored it after the case."""


class CaseVictim(Exception):
    """The case would run under state an earlier case changed and nothing could restore."""


def gate_of(item: pytest.Item) -> tuple[str, Any] | None:
    """(gate, case param) of an accelgate case item; None for other tests and placeholders."""
    found = case_param(item)
    if found is None or found[1] is None:
        return None
    name, value = found
    if name != "accelgate_case":
        return "distribution", value
    return ("speed" if "benchmark" in getattr(item, "fixturenames", ()) else "quality"), value


def _case(value: Any):
    return getattr(value, "case", value)  # a distribution param wraps the matrix case


class Guard:
    """Per-process bookkeeping of the items that ran."""

    def __init__(self, state, config: pytest.Config):
        self.state = state
        self.items: list[pytest.Item] = []  # the accelgate cases selected to run, in order
        self.ran: set[str] = set()
        self.current: pytest.Item | None = None
        capture = config.pluginmanager.get_plugin("capturemanager")
        self.watchdog = Watchdog(self._timed_out, uncaptured=capture.global_and_fixture_disabled if capture else
                                 contextlib.nullcontext)

    def record(self, item: pytest.Item, outcome: str, reason: str) -> None:
        """Hand a case that ended without its verdict to its gate (which keeps the first word)."""
        found = gate_of(item)
        recorder = self.state.recorders.get(found[0]) if found else None
        if recorder is not None:
            recorder(found[1], outcome, reason)

    def _timed_out(self, label: str, seconds: float) -> None:
        import sys

        item = self.current
        text = (f"{label} ran past its time limit of {limit_text(seconds)}; accelgate ended the run "
                "(run it alone with --accelgate-isolate to have it killed and the run go on)")
        if item is not None:
            self.record(item, "error", text)
        self.stopped(text)
        where = ""
        if self.state.report_dir is not None and write_final_report(self.state):
            where = f"; the report so far is in {self.state.report_dir}"
        sys.stderr.write(f"\naccelgate: TIMEOUT {text}{where}\n")
        sys.stderr.flush()

    def stopped(self, because: str) -> None:
        """Mark the run as ended early, listing the selected cases that did not run."""
        not_run = []
        for item in self.items:
            found = gate_of(item)
            if item.nodeid not in self.ran and item is not self.current and found is not None:
                not_run.append({"id": _case(found[1]).id, "gate": found[0], "test": item.nodeid})
        self.state.stopped = {"interrupted": True, "not_run": not_run, "stopped_because": because}


GUARD = pytest.StashKey[Guard]()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        config.stash[GUARD] = Guard(state, config)


def _guard(config: pytest.Config) -> Guard | None:
    return config.stash.get(GUARD, None)


@pytest.hookimpl(trylast=True)  # after every deselect (-k, -m, regen, emptied tests)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    guard = _guard(config)
    if guard is not None:
        guard.items = [item for item in items if gate_of(item) is not None]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    guard = _guard(item.config)
    if guard is None:
        return (yield)
    guard.current = item
    result = yield  # a KeyboardInterrupt passes through: `current` then names the interrupted case
    guard.ran.add(item.nodeid)
    guard.current = None
    return result


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item):
    guard = _guard(item.config)
    found = gate_of(item) if guard is not None else None
    if found is None:
        return (yield)
    gate, value = found
    case, session = _case(value), guard.state.session
    isolated = session.isolate and gate in ISOLATED_GATES
    session.case_started()
    if not isolated:
        try:
            classes = session.pipeline_classes(case.model)
        except Exception:  # noqa: BLE001 (the model does not load: the gate reports that itself)
            classes = []
        outside, victim = session.sandbox.begin(classes)
        if outside:
            warnings.warn(ProcessStateChanged(
                f"{case.id}: process-wide state changed outside any accelgate case since the last one (another test "
                "or a fixture); restored before this case:\n  " + "\n  ".join(c.text() for c in outside)))
        if victim is not None:
            raise CaseVictim(victim.message(case.id))
    limit = session.case_timeout
    guard.watchdog.arm(case.id, limit + WATCHDOG_MARGIN_S if isolated and limit else limit)
    try:
        return (yield)
    finally:
        guard.watchdog.disarm()
        if not isolated:
            changes = session.sandbox.end(case.id)
            if changes:
                _report_changes(guard, gate, case, changes)


def _report_changes(guard: Guard, gate: str, case, changes) -> None:
    lost = [c for c in changes if not c.restored]
    text = (f"{case.id}: backend {case.backend.name!r} changed process-wide state; "
            + ("accelgate restored it after the case" if not lost else
               f"{len(lost)} change(s) could NOT be restored: later cases that still see them fail as its victims")
            + ":\n  " + "\n  ".join(c.text() for c in changes))
    guard.state.case_notes.setdefault((gate, case.id), {})["state_changes"] = [c.as_json() for c in changes]
    warnings.warn(ProcessStateChanged(text))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """A case that failed without its gate's verdict (setup error, victim, a raise the gate did
    not catch) still gets its entry in results.json."""
    report = yield
    guard = _guard(item.config)
    if guard is not None and report.failed and call.excinfo is not None and gate_of(item) is not None:
        error = call.excinfo.value
        if isinstance(error, CaseVictim):
            guard.record(item, "failed", str(error))
        elif is_out_of_memory(error):
            guard.record(item, "oom", out_of_memory_reason(error, format_resolution(_case(gate_of(item)[1]).resolution),
                                                           guard.state.session.device))
        else:
            outcome = "failed" if isinstance(error, AssertionError) and call.when == "call" else "error"
            guard.record(item, outcome, f"{describe_error(error)} (during {call.when})")
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus) -> None:
    """After Ctrl-C (or a stop by the watchdog): the case that was running is recorded as
    interrupted and the report lists the cases that did not run."""
    guard = _guard(session.config)
    if guard is None:
        return
    guard.watchdog.finishing = True
    if exitstatus == pytest.ExitCode.INTERRUPTED or guard.state.stopped:
        if guard.current is not None and gate_of(guard.current) is not None:
            guard.record(guard.current, "error", "interrupted (KeyboardInterrupt: Ctrl-C, or raised by the backend) "
                                                 "while this case ran")
        if not guard.state.stopped:
            guard.stopped("interrupted (KeyboardInterrupt)")
