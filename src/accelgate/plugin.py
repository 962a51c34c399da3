"""The pytest plugin's core: shared options, markers, the session in the stash, the
`accelgate_case` parametrization, the one regen deselect, and the one report at session end.

Registered through the `pytest11` entry point, so any repository that installs accelgate
gets `--models/--backends/--resolutions/--device`, `--regen-baselines`, `--baseline-dir`,
`--quality-report`, and the `accelgate_case` parametrization over its own config's matrix.
Each gate (quality/, distribution/, speed/) is a plugin of its own, loaded with this one;
each hands its results to the session as a JSON part (`AccelgateState.add_part`), and this
module writes them: once, after the session, by the controller under pytest-xdist (workers
send their parts over xdist's `workeroutput`, as pytest-mpl merges its workers' results).

Starting costs nothing in a repository that runs no accelgate case: the config is parsed
from names alone, and torch is imported only once a case is collected.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from accelgate.config.find import find_config
from accelgate.config.load import build_config
from accelgate.selftest import selftest_config
from accelgate.config.schema import (
    DEVICE_CHOICES, ConfigError, option_type, parse_device, parse_name_list, parse_regen_mode, parse_resolution,
)
from accelgate.matrix import narrow
from accelgate.models.registry import TASKS
from accelgate.session import Session

MARKERS = {
    "quality": "image-quality gate cases (accelerated backend vs stored PyTorch baseline)",
    "gpu": "needs a CUDA GPU and real model weights; skipped with a reason elsewhere",
    "slow": "long runs: prompt-set metrics, cold compiles",
    "benchmark": "speed and memory measurements (pytest-benchmark)",
    "accelgate_tasks(*tasks)": f"the tasks whose cases parametrize `accelgate_case` here; tasks: {', '.join(TASKS)}",
}
CASE_FIXTURES = ("accelgate_case", "accelgate_distribution_case", "accelgate_metrics_case")
WORKER_PARTS = "accelgate_parts"  # the key of a worker's parts in xdist's workeroutput
WORKER_DEVICE = "accelgate_device"  # ... and of the device it ran on
NO_CASE = "no-case"  # the id of the placeholder param of a test the (narrowed) matrix gives no case

# The gates: each a plugin of its own, loaded with this one so their options exist before
# the command line is parsed; the guard keeps cases apart (sandbox, time limits, records).
pytest_plugins = ["accelgate.quality.plugin", "accelgate.distribution.plugin", "accelgate.speed.plugin",
                  "accelgate.guard"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--case-timeout takes seconds (0: no limit), got {text!r}") from None
    if not value >= 0:
        raise ValueError(f"--case-timeout must be >= 0 seconds (0: no limit), got {text!r}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("accelgate", "accelgate: quality and speed gate for accelerated diffusion pipelines")
    group.addoption("--accelgate-config", metavar="FILE", default=None,
                    help="TOML file with the matrix (same keys as [tool.accelgate] in pyproject.toml, at top level)")
    group.addoption("--models", metavar="LIST", default=None, help="comma list narrowing the matrix's models")
    group.addoption("--backends", metavar="LIST", default=None, help="comma list narrowing the matrix's backends")
    group.addoption("--resolutions", metavar="LIST", default=None, help="comma list like 64x64,32x32")
    group.addoption("--device", metavar="DEVICE", default=None, type=option_type(parse_device),
                    help=f"where pipelines run: {DEVICE_CHOICES} (default: the config's, else auto)")
    group.addoption("--regen-baselines", nargs="?", const="all", default=None, metavar="all|missing",
                    type=option_type(parse_regen_mode),
                    help="write the reference backend's images as the new baselines (atomic per case); "
                         "=missing: only cases whose baseline is missing or stale")
    group.addoption("--prune-baselines", action="store_true", default=False,
                    help="remove baselines of models or resolutions the config no longer has (listed in every run)")
    group.addoption("--baseline-dir", metavar="DIR", default=None,
                    help="where baselines live (default: the config's baseline_dir, ./baselines)")
    group.addoption("--quality-report", metavar="DIR", default=None,
                    help="write results.json, summary.md and candidate/baseline/diff images to DIR")
    group.addoption("--case-timeout", metavar="SECONDS", default=None, type=option_type(_seconds),
                    help="time limit of one case (default: case_timeout of the config, else 600 s on CPU, "
                         "3600 s on CUDA; 0: none)")
    group.addoption("--accelgate-isolate", action="store_true", default=False,
                    help="run each quality and distribution case in its own process (spawned): what a backend "
                         "changes process-wide dies with it, a crash is that case's error, a case over its time "
                         "limit is killed")
    group.addoption("--accelgate-selftest", action="store_true", default=False,
                    help="the sensitivity self-test: run the shipped damages instead of the matrix's backends "
                         "against its models, baselines and tolerances; a damage the gate does not catch fails")
    group.addoption("--accelgate-strict-apply", action="store_true", default=False,
                    help="fail, instead of warn, when a backend that declares it changes the numerics makes float "
                         "images equal to the reference's bit for bit (it did not apply)")


def _names(text: str | None, allowed: list[str], flag: str) -> list[str] | None:
    """A narrowing option: None when not given; empty or repeated names are usage errors."""
    if text is None:
        return None
    names = parse_name_list(text, allowed, flag)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{flag}: {', '.join(map(repr, repeated))} given twice; name each once")
    return names


class AccelgateState:
    """What one pytest process knows: the core session, the gates' parts, the report."""

    def __init__(self, pytest_config: pytest.Config):
        option = pytest_config.option
        rootdir = Path(pytest_config.rootpath)
        self.found = find_config(rootdir, option.accelgate_config, Path(pytest_config.invocation_params.dir))
        config = build_config(self.found.raw, self.found.source,
                              self.found.source.parent if self.found.source else rootdir)
        if option.accelgate_selftest:
            config = selftest_config(config)
        resolutions = None
        if option.resolutions is not None:
            resolutions = [parse_resolution(r, "--resolutions") for r in option.resolutions.split(",") if r.strip()]
            if not resolutions:
                raise ConfigError("--resolutions is empty; give at least one, e.g. --resolutions=64x64")
        narrowing = narrow(config, _names(option.models, [m.id for m in config.models], "--models"),
                           _names(option.backends, [b.spec.name for b in config.backends], "--backends"), resolutions)
        if option.regen_baselines and narrowing.backends is not None and config.reference not in narrowing.backends:
            raise ConfigError(
                f"--regen-baselines writes the reference backend's images ({config.reference!r}), but "
                f"--backends={','.join(narrowing.backends)} leaves it out, so nothing would be written; add it "
                f"(--backends={config.reference}) or drop --backends")
        self.config = config
        self.raw_config = self.found.raw
        self.rootdir = rootdir.resolve()
        self.explicit_config = bool(option.accelgate_config)
        self.baseline_option, self.device_option = option.baseline_dir, option.device
        self.session = Session(config, option.device, narrowing, isolate=option.accelgate_isolate,
                               timeout_option=option.case_timeout, worker=xdist_worker(pytest_config))
        self.report_dir = Path(option.quality_report).resolve() if option.quality_report else None
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._providers: dict[str, Callable[[], dict[str, Any] | None]] = {}
        self.recorders: dict[str, Callable[[Any, str, str], None]] = {}
        self.case_notes: dict[tuple[str, str], dict[str, Any]] = {}  # (gate, case id) -> keys added to its JSON
        self.worker_devices: dict[str, dict[str, str]] = {}  # xdist controller: each worker's device and class
        self.worker_parts: dict[str, dict[str, Any]] | None = None  # the xdist controller's merge of its workers'
        self.results: dict[str, Any] | None = None  # what the report holds after it was written
        self.stopped: dict[str, Any] = {}  # "interrupted", "not_run", "stopped_because" once the run ended early
        self.saw_cases = False  # an accelgate case was collected (before any deselect)
        self._run_meta: dict[str, Any] | None = None

    def add_part(self, gate: str, provider: Callable[[], dict[str, Any] | None],
                 record: Callable[[Any, str, str], None] | None = None) -> None:
        """A gate's JSON part, asked for at session end (None: the gate ran no case), and how
        the gate records a case that ended without its verdict (`record(case, outcome, reason)`)."""
        self._providers[gate] = provider
        if record is not None:
            self.recorders[gate] = record

    def parts(self) -> dict[str, dict[str, Any]]:
        if self.worker_parts is not None:
            return self.worker_parts
        found = {gate: provider() for gate, provider in self._providers.items()}
        parts = {gate: part for gate, part in found.items() if part is not None}
        for gate, part in parts.items():
            for case in part.get("cases", []):
                case.update(self.case_notes.get((gate, case.get("id")), {}))
        return parts

    def command_options(self) -> tuple[str, ...]:
        """The options a printed command needs to reproduce this run's situation: its config
        (unless it is the rootdir's pyproject.toml, found anyway), baseline directory and
        device, written `--option=value` (a bare path after a plugin option can move the rootdir)."""
        options, source = [], self.config.source
        if source and (self.explicit_config or source != self.rootdir / "pyproject.toml"):
            options.append(f"--accelgate-config={source}")
        if self.baseline_option:
            options.append(f"--baseline-dir={Path(self.baseline_option).resolve()}")
        if self.device_option:
            options.append(f"--device={self.device_option}")
        return tuple(options)

    def run_meta(self) -> dict[str, Any]:
        """What a report records of this run, and what must match for two runs to share one."""
        from accelgate.machine import device_class, package_version
        from accelgate.report.writer import new_run_id

        if self._run_meta is None:
            canonical = json.dumps(self.raw_config, sort_keys=True, default=str).encode()
            self._run_meta = {
                "id": new_run_id(), "started": self.started, "device": self.session.device,
                "device_class": device_class(self.session.device),
                "config": str(self.config.source) if self.config.source else None,
                "config_sha256": hashlib.sha256(canonical).hexdigest()[:16],
                "reference": self.config.reference,
                "versions": {name: package_version(name) for name in ("accelgate", "torch", "diffusers", "transformers")},
            }
        meta = {**self._run_meta, **self.stopped}
        if self.worker_devices:  # under xdist: the workers' devices, each GPU's class (a box may mix GPU models)
            meta["workers"] = dict(sorted(self.worker_devices.items()))
            meta["device_class"] = "+".join(sorted({w["device_class"] for w in self.worker_devices.values()}))
        return meta


STATE = pytest.StashKey[AccelgateState]()


def register_report_sections() -> None:
    """Every gate's report section, for rendering outside a pytest run (`python -m accelgate.report`):
    the gates register their sections when their report modules are imported, and only the
    composition root may import the gates."""
    from accelgate.distribution import report as distribution_report  # noqa: F401
    from accelgate.quality import report as quality_report  # noqa: F401
    from accelgate.speed import report as speed_report  # noqa: F401


def state_of(config: pytest.Config) -> AccelgateState:
    return config.stash[STATE]


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def xdist_worker(config: pytest.Config) -> tuple[int, int] | None:
    """(index, count) of this pytest-xdist worker ('gw3' of 4 -> (3, 4)); None outside xdist."""
    if not _is_worker(config):
        return None
    return int(config.workerinput["workerid"].removeprefix("gw")), int(config.workerinput["workercount"])


def check_workers_have_gpus(config: pytest.Config, state: AccelgateState) -> None:
    """The xdist controller, before any worker starts: `-n N --device cuda` needs N GPUs."""
    workers = getattr(config.option, "numprocesses", None)
    if _is_worker(config) or not isinstance(workers, int) or workers < 2 or state.session.requested_device != "cuda":
        return
    from accelgate.session import worker_device

    worker_device("cuda", (0, workers))  # the same rule and message the workers apply


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    try:
        state = AccelgateState(config)
        config.stash[STATE] = state
        if config.option.baseline_dir and Path(config.option.baseline_dir).exists() \
                and not Path(config.option.baseline_dir).is_dir():
            raise ConfigError(f"--baseline-dir={config.option.baseline_dir} is a file, not a directory")
        check_workers_have_gpus(config, state)
        if state.report_dir is not None and not _is_worker(config):
            from accelgate.report.writer import ReportConflict, check_mergeable, check_writable

            try:
                check_writable(state.report_dir)
                check_mergeable(state.report_dir, state.run_meta())
            except ReportConflict as error:
                raise pytest.UsageError(f"accelgate: --quality-report={state.report_dir}: {error}") from None
        for warning in state.found.warnings:
            config.issue_config_time_warning(pytest.PytestConfigWarning(f"accelgate: {warning}"), stacklevel=2)
    except ConfigError as error:
        raise pytest.UsageError(f"accelgate: {error}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which config runs (and where it looked, or what else it found): never a silent default."""
    state = config.stash.get(STATE, None)
    return list(state.found.notes) if state is not None else []


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    """`--device cuda` (or device = "cuda" in the config) on a machine without CUDA is a usage
    error before anything is collected (it was an INTERNALERROR, or a collection error)."""
    state = session.config.stash.get(STATE, None)
    if state is not None and state.session.requested_device.startswith("cuda"):
        try:
            state.session.device
        except ConfigError as error:
            raise pytest.UsageError(f"accelgate: {error}") from None


def no_case_param(argname: str, reason: str):
    """The one param of a test the (narrowed) matrix gives no case: a skip saying why, deselected
    when narrowing options made it empty (pytest's own empty-parameter-set mark crashed here)."""
    return pytest.param(None, id=NO_CASE, marks=pytest.mark.skip(reason=f"{argname}: {reason}"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`accelgate_case`: every case of the (narrowed) matrix whose task the module declares."""
    if "accelgate_case" not in metafunc.fixturenames:
        return
    state = state_of(metafunc.config)
    marker = metafunc.definition.get_closest_marker("accelgate_tasks")
    tasks = tuple(marker.args) if marker and marker.args else TASKS
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise pytest.UsageError(f"accelgate_tasks{unknown} in {metafunc.definition.nodeid}: tasks are {', '.join(TASKS)}")
    params = case_params(state, state.session.matrix.for_tasks(tasks))
    if not params:
        params = [no_case_param("accelgate_case", f"the (narrowed) matrix has no {' or '.join(tasks)} case")]
    metafunc.parametrize("accelgate_case", params)


def case_params(state: AccelgateState, cases) -> list:
    """pytest params for cases: ids `model/backend/WxH`, the gpu marker, a skip with the reason."""
    params = []
    for case in cases:
        marks = [pytest.mark.gpu] if case.model.gpu else []
        try:
            reason = state.session.skip_reason(case)
        except ConfigError as error:
            raise pytest.UsageError(f"accelgate: {error}") from None
        if reason:
            marks.append(pytest.mark.skip(reason=reason))
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


def case_param(item: pytest.Item) -> tuple[str, Any] | None:
    """(fixture name, value) of an accelgate case item; the value is None for a placeholder."""
    params = getattr(item, "callspec", None) and item.callspec.params
    for name in CASE_FIXTURES:
        if params and name in params:
            return name, params[name]
    return None


def _per_image(item: pytest.Item) -> bool:
    """A per-image quality case: what --accelgate-selftest runs (speed and distribution cases are not)."""
    found = case_param(item)
    return (found is not None and found[0] == "accelgate_case" and item.get_closest_marker("benchmark") is None
            and "benchmark" not in getattr(item, "fixturenames", ()))


def _writes_a_baseline(item: pytest.Item) -> bool:
    """The per-image gate's reference cases are what --regen-baselines runs."""
    found = case_param(item)
    return _per_image(item) and found[1] is not None and found[1].reference


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The one accelgate deselect. With --regen-baselines only the reference backend's
    per-image cases run (they write baselines); every other accelgate case (other backends,
    speed, distribution) is deselected. A placeholder (a test the matrix gives no case) is
    deselected when narrowing options or the regen emptied it, and skips with its reason
    otherwise. Tests that are not accelgate cases run as usual."""
    state = config.stash.get(STATE, None)
    option = config.option
    narrowed = option.regen_baselines or option.accelgate_selftest or any(v is not None for v in (option.models, option.backends, option.resolutions))
    keep, drop = [], []
    for item in items:
        found = case_param(item)
        if found is not None and state is not None:
            state.saw_cases = True
        placeholder = found is not None and found[1] is None
        regen_drop = option.regen_baselines and found is not None and not _writes_a_baseline(item)
        selftest_drop = option.accelgate_selftest and found is not None and not _per_image(item)
        (drop if regen_drop or selftest_drop or (placeholder and narrowed) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_collection_finish(session: pytest.Session) -> None:
    """Before any case runs: what only diffusers can check in the config (scheduler classes,
    call_kwargs against the pipeline's __call__), and a regen that would write nothing."""
    from accelgate.config.checks import check_libraries, configured

    config = session.config
    state = config.stash.get(STATE, None)
    if state is None:
        return
    cases = [found[1] for found in map(case_param, session.items) if found is not None and found[1] is not None]
    models = {getattr(c, "case", c).model.id: getattr(c, "case", c).model for c in cases}
    try:
        check_libraries(configured(models.values(), state.raw_config))
    except ConfigError as error:
        raise pytest.UsageError(f"accelgate: {state.config.source or 'the built-in defaults'}, {error}") from None
    if config.option.regen_baselines and getattr(state, "saw_cases", False) \
            and not any(_writes_a_baseline(item) for item in session.items):
        reference = state.config.reference
        example = shlex.join(["pytest", "-m", "quality", "--regen-baselines", "-k", reference, *state.command_options()])
        raise pytest.UsageError(
            f"accelgate: --regen-baselines selected no case that writes a baseline. Baselines are the reference "
            f"backend's ({reference!r}) images, written by its per-image quality cases; the selection (-k, -m, "
            f"--models, --resolutions, test paths) left none. Select some, e.g.:\n    {example}")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist controller: merge a finished worker's parts into the one report's."""
    from accelgate.report.writer import merge_part

    state = node.config.stash.get(STATE, None)
    output = getattr(node, "workeroutput", {})
    text = output.get(WORKER_PARTS)
    if state is None or text is None:
        return
    if output.get(WORKER_DEVICE):
        worker = getattr(node, "workerinput", {}).get("workerid", f"gw{len(state.worker_devices)}")
        state.worker_devices[worker] = json.loads(output[WORKER_DEVICE])
    merged = state.worker_parts if state.worker_parts is not None else {}
    for gate, part in json.loads(text).items():
        merged[gate] = merge_part(merged.get(gate), part)
    state.worker_parts = merged


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The one place the report is written (a worker sends its parts to the controller instead).
    A report that cannot be written (the disk filled during the run) leaves the verdicts above
    as they are and any earlier report intact, and says so."""
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None:
        return
    parts = state.parts()
    if _is_worker(config):
        config.workeroutput[WORKER_PARTS] = json.dumps(parts)
        if state.session.device_resolved:
            from accelgate.machine import device_class

            config.workeroutput[WORKER_DEVICE] = json.dumps(
                {"device": state.session.device, "device_class": device_class(state.session.device)})
        return
    if state.report_dir is None or not (parts or state.stopped):
        return
    write_final_report(state, parts, session)


def write_final_report(state: AccelgateState, parts: dict | None = None, session: pytest.Session | None = None) -> bool:
    """Write the report now (also from the time-limit watchdog); False, with the reason printed,
    when the directory refused it."""
    import sys

    from accelgate.report.writer import write_report

    try:
        state.results = write_report(state.report_dir, state.run_meta(), state.parts() if parts is None else parts)
        return True
    except OSError as error:
        sys.stderr.write(f"\naccelgate: ERROR could not write the report to {state.report_dir}: "
                         f"{error.strerror or error} ({error.filename or state.report_dir}). The verdicts printed above "
                         "stand; results.json and summary.md there are the previous run's (or absent).\n")
        if session is not None and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
        return False


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.session.close()
