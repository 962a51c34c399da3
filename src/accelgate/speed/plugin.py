"""pytest-benchmark integration: the `accelgate_speed` fixture, machine info, compare guards,
and the seed-004 speed table at session end. Measurement itself lives in `accelgate.speed`.

Registered by `accelgate.plugin` at configure time. What users meet here:
- `--benchmark-compare` with no saved run fails at once, naming the command to run first,
  instead of pytest-benchmark's warning followed, at the very end of a long run, by
  "--benchmark-compare-fail requires valid --benchmark-compare.";
- a comparison against a run saved on other hardware warns loudly, naming both machines;
- quality and speed stay apart: speed cases carry only the `benchmark` marker (never
  selected by `-m quality`), never write baselines or quality verdicts, are deselected
  under `--regen-baselines` (accelgate.plugin's one deselect), and skip with a reason where
  pytest-benchmark is disabled (xdist, `--benchmark-disable`): timing cases in parallel
  measures the neighbours.
The speed table goes to the report as this gate's part (`accelgate.speed.report` renders it).
"""
from __future__ import annotations

import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from accelgate.machine import MACHINE_INFO_KEY, compare_machines, machine_info
from accelgate.config.schema import option_type
from accelgate.plugin import STATE, state_of
from accelgate.speed.compare import FIELDS, case_key, compare_case, parse_compare_fail, saved_cases
from accelgate.speed import report  # noqa: F401  (registers the gate's report section)

SPEED = pytest.StashKey["SpeedFixture"]()
MISMATCHES = pytest.StashKey[list]()
MACHINE = pytest.StashKey[dict]()
COMPARED = pytest.StashKey[tuple]()  # (limits, saved run name, its cases) for --accelgate-compare-fail


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("accelgate")
    group.addoption("--accelgate-compare-fail", metavar="LIST", default=None, type=option_type(parse_compare_fail),
                    help="with --benchmark-compare: fail a case whose it/s, E2E, peak memory or warmup moved the wrong "
                         "way by more than N%% against the saved run, e.g. peak_mem:10%%,cold_warmup:25%% (fields: "
                         + ", ".join(FIELDS) + ")")


def _option(config: pytest.Config, name: str, default=None):
    try:
        return config.getoption(name)
    except ValueError:  # pytest-benchmark not loaded (-p no:benchmark)
        return default


def _rerun_command(config: pytest.Config, *extra: str) -> str:
    """`pytest -m benchmark ...` with this invocation's config, storage and narrowing options,
    written `--option=value`: pytest reads a bare path after an option its early parser does
    not know yet as a test path, and may then pick another rootdir (and config)."""
    parts = ["pytest", "-m", "benchmark"]
    for option, flag in (("accelgate_config", "--accelgate-config"), ("models", "--models"),
                         ("backends", "--backends"), ("resolutions", "--resolutions"), ("device", "--device")):
        value = _option(config, option)
        if value:
            parts.append(f"{flag}={value}")
    storage = _option(config, "benchmark_storage")
    if storage and storage != "file://./.benchmarks":
        parts.append(f"--benchmark-storage={storage}")
    return shlex.join(parts + list(extra))


def _saved_runs(config: pytest.Config):
    """(storage, machine id, runs matching --benchmark-compare) as pytest-benchmark will
    load them, or None for a storage we cannot inspect (elasticsearch)."""
    from pytest_benchmark.storage.file import FileStorage
    from pytest_benchmark.utils import get_machine_id, load_storage

    class _Collect:
        """pytest-benchmark's logger: keeps its "Failed to load FILE" warnings to name them."""

        def __init__(self):
            self.failed: list[str] = []

        def warning(self, text, *args, **kwargs):
            if str(text).startswith("Failed to load"):
                self.failed.append(str(text).removeprefix("Failed to load ").strip())

        def info(self, *args, **kwargs):
            pass

        debug = info

    machine_id = get_machine_id()
    logger = _Collect()
    storage = load_storage(_option(config, "benchmark_storage"), logger=logger, default_machine_id=machine_id,
                           netrc=_option(config, "benchmark_netrc"))
    if not isinstance(storage, FileStorage):
        return None
    compare = _option(config, "benchmark_compare")
    runs = list(storage.load()) if compare is True else list(storage.load(compare))
    return storage, machine_id, runs, logger.failed


def check_compare_has_a_baseline(config: pytest.Config) -> None:
    """Refuse `--benchmark-compare` when there is nothing to compare with, saying what to run."""
    compare = _option(config, "benchmark_compare")
    if not compare or _option(config, "benchmark_skip") or _option(config, "benchmark_disable"):
        return
    found = _saved_runs(config)
    if found is None or found[2]:
        return
    storage, machine_id, _, unreadable = found
    others = sorted(p.name for p in Path(str(storage)).glob("*") if p.is_dir() and p.name != machine_id)
    what = "no saved benchmark run" if compare is True else f"no saved benchmark run matching {compare!r}"
    if unreadable:
        what = f"no readable saved benchmark run (unreadable: {'; '.join(unreadable)})"
    lines = [
        f"accelgate: --benchmark-compare found {what} in {storage}/{machine_id} "
        "(pytest-benchmark compares only runs saved under the same machine id).",
        "Save a baseline run first, on this machine and with the same selection:",
        f"    {_rerun_command(config, '--benchmark-autosave')}",
        "then compare against it:",
        f"    {_rerun_command(config, '--benchmark-compare', '--benchmark-compare-fail=median:10%')}",
    ]
    if others:
        lines.append(f"Runs exist for other machine ids ({', '.join(others)}): they are not compared; "
                     "pass a file path to --benchmark-compare to compare with one explicitly.")
    raise pytest.UsageError("\n".join(lines))


UNMEASURED = pytest.StashKey[list]()


@pytest.hookimpl(trylast=True)  # after accelgate.plugin has built the session
def pytest_configure(config: pytest.Config) -> None:
    config.stash[MISMATCHES] = []
    config.stash[UNMEASURED] = []
    check_compare_has_a_baseline(config)
    load_compared_run(config)
    state = config.stash.get(STATE, None)
    if state is not None:
        state.add_part("speed", lambda: _report_part(config), record=lambda case, outcome, reason: _record_missing(
            config, case, outcome, reason))


def _report_part(config: pytest.Config) -> dict | None:
    fixture = config.stash.get(SPEED, None)
    part = fixture.report_part() if fixture is not None else None
    unmeasured = config.stash.get(UNMEASURED, [])
    if part is None and unmeasured:
        part = {"reference": state_of(config).config.reference, "machine": current_machine(config), "cases": []}
    if part is not None:
        part["cases"] += [c for c in unmeasured if c["id"] not in {m["id"] for m in part["cases"]}]
    return part


def _record_missing(config: pytest.Config, case, outcome: str, reason: str) -> None:
    """A speed case that raised instead of measuring still appears in results.json["speed"]."""
    entries = config.stash[UNMEASURED]
    if not any(e["id"] == case.id for e in entries):
        entries.append({"id": case.id, "model": case.model.id, "backend": case.backend.name,
                        "resolution": f"{case.width}x{case.height}", "outcome": outcome, "verdict": outcome,
                        "reason": reason})


def load_compared_run(config: pytest.Config) -> None:
    """For --accelgate-compare-fail: the saved run pytest-benchmark compares with, by case."""
    limits = _option(config, "accelgate_compare_fail")
    if not limits:
        return
    if not _option(config, "benchmark_compare"):
        raise pytest.UsageError(
            "accelgate: --accelgate-compare-fail compares with a saved run and needs --benchmark-compare to pick it, "
            f"e.g.:\n    {_rerun_command(config, '--benchmark-compare', '--accelgate-compare-fail=peak_mem:10%')}")
    found = _saved_runs(config)
    if found is None:
        raise pytest.UsageError("accelgate: --accelgate-compare-fail reads saved runs from file storage only; "
                                "--benchmark-storage names another kind")
    path, data = found[2][-1]  # check_compare_has_a_baseline made sure there is one
    config.stash[COMPARED] = (limits, Path(str(path)).name, saved_cases(data))


def _device(config: pytest.Config) -> str:
    state = config.stash.get(STATE, None)
    return state.session.device if state is not None else "cpu"


def current_machine(config: pytest.Config) -> dict:
    if MACHINE not in config.stash:
        config.stash[MACHINE] = machine_info(_device(config))
    return config.stash[MACHINE]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """GPU, driver, CUDA, torch, diffusers, onediff/nexfort versions, next to pytest-benchmark's CPU."""
    machine_info[MACHINE_INFO_KEY] = current_machine(config)


def _shout(config: pytest.Config, text: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        for line in text.splitlines():
            reporter.write_line(line, red=True, bold=True)
    else:
        sys.stderr.write(text + "\n")


def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info, compared_benchmark) -> None:
    """Loud, named warning when the saved run was measured on other hardware (pytest-benchmark's
    own warning fires on any difference, hostname included, and is easy to miss)."""
    warning = compare_machines(compared_benchmark.get("machine_info"), machine_info)
    if warning:
        config.stash.setdefault(MISMATCHES, []).append(warning)
        _shout(config, warning)
        config.issue_config_time_warning(pytest.PytestWarning(warning.replace("!" * 78, "").strip()), stacklevel=2)


class SpeedFixture:
    """What `tests/test_speed.py` sees: one measurement per case, its verdict asserted there."""

    def __init__(self, config: pytest.Config):
        from accelgate.speed.session import SpeedSession

        self.config = config
        self.state = state_of(config)
        self.session = SpeedSession(self.state.session)

    def report_part(self) -> dict | None:
        """This gate's part of results.json: this session's cases, the machine, and the latest
        saved run of this machine (its cases complete the table where this session measured none)."""
        if not self.session.results:
            return None
        return {"reference": self.session.reference, "machine": current_machine(self.config),
                "datetime": datetime.now(timezone.utc).isoformat(),
                "cases": [{"id": f"{i['model']}/{i['backend']}/{i['resolution']}", "outcome": i["verdict"], **i}
                          for i in self.session.results],
                "saved_run": _latest_saved_run(self.config)}

    def measure(self, case, benchmark):
        if getattr(benchmark, "disabled", False):
            pytest.skip("pytest-benchmark is disabled here (it disables itself under xdist and with "
                        "--benchmark-disable): run speed cases serially, one process per GPU: "
                        "pytest -m benchmark -p no:xdist")
        reason = self.session.skip_reason(case)
        if reason:
            pytest.skip(reason)
        benchmark.group = f"{case.model.id} @ {case.width}x{case.height}"
        verdict = self.session.measure(case, benchmark.pedantic)
        compared = self.config.stash.get(COMPARED, None)
        if compared is not None:
            limits, name, cases = compared
            rows, problems = compare_case(verdict.extra_info, cases.get(case_key(verdict.extra_info)), limits, name)
            verdict.extra_info["compare"] = {"saved_run": name, "rows": rows,
                                             "in_saved_run": case_key(verdict.extra_info) in cases}
            verdict.problems.extend(problems)
            verdict.extra_info["problems"] = list(verdict.problems)
            verdict.extra_info["verdict"] = "failed" if verdict.problems else "passed"
        benchmark.extra_info.update(verdict.extra_info)
        return verdict


@pytest.fixture(scope="session")
def accelgate_speed(request: pytest.FixtureRequest) -> SpeedFixture:
    config = request.config
    if SPEED not in config.stash:
        config.stash[SPEED] = SpeedFixture(config)
    return config.stash[SPEED]


# ------------------------------------------------------------------------------ the table


def _latest_saved_run(config: pytest.Config) -> dict | None:
    """The newest run pytest-benchmark saved for this machine, reduced to what the table reads."""
    session = getattr(config, "_benchmarksession", None)
    storage = getattr(session, "storage", None)
    if storage is None or not hasattr(storage, "load"):
        return None
    runs = list(storage.load())
    if not runs:
        return None
    path, data = runs[-1]
    return {"_path": str(path), "datetime": data.get("datetime", ""), "machine_info": data.get("machine_info"),
            "benchmarks": [{"extra_info": b.get("extra_info") or {}} for b in data.get("benchmarks", [])]}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove the compile caches kept for shape switches (the report is accelgate.plugin's)."""
    fixture = session.config.stash.get(SPEED, None)
    if fixture is not None:
        fixture.session.close()


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB" if value >= 2**20 else f"{value / 2**10:.0f} KiB"


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    fixture = config.stash.get(SPEED, None)
    mismatches = config.stash.get(MISMATCHES, [])
    if not mismatches and (fixture is None or not fixture.session.results):
        return
    terminalreporter.section("accelgate speed")
    for warning in mismatches:
        for line in warning.splitlines():
            terminalreporter.write_line(line, red=True, bold=True)
    for info in fixture.session.results if fixture else ():
        switch = f", shape switch {info['shape_switch_s']:.2f} s" if info.get("shape_switch_s") is not None else ""
        speedup = info.get("speedup_vs_reference")
        terminalreporter.write_line(
            f"{info['model']}/{info['backend']}/{info['resolution']}: {info['it_per_s']:.2f} it/s, "
            f"E2E {info['e2e_s']:.3f} s, peak {_mib(info['peak_mem_bytes'])}, warmup cold "
            f"{info['cold_warmup_s']:.2f} s / warm {info['warm_warmup_s']:.2f} s{switch}, recompiles "
            f"{info['recompiles_total']}/{info['recompile_budget']}"
            + (f", {speedup:.2f}x {info['reference']}" if speedup else ""),
            red=info["verdict"] != "passed")
    report_dir = fixture.state.report_dir if fixture else None
    if report_dir is not None and fixture.session.results:
        terminalreporter.write_line(f"speed table: {report_dir / 'speed.md'} (and results.json['speed'])")
