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
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from accelgate.config.load import build_config, find_config
from accelgate.config.schema import (
    DEVICE_CHOICES, ConfigError, option_type, parse_device, parse_name_list, parse_resolution,
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

# The gates: each a plugin of its own, loaded with this one so their options exist before
# the command line is parsed.
pytest_plugins = ["accelgate.quality.plugin", "accelgate.distribution.plugin", "accelgate.speed.plugin"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("accelgate", "accelgate: quality and speed gate for accelerated diffusion pipelines")
    group.addoption("--accelgate-config", metavar="FILE", default=None,
                    help="TOML file with the matrix (same keys as [tool.accelgate] in pyproject.toml, at top level)")
    group.addoption("--models", metavar="LIST", default=None, help="comma list narrowing the matrix's models")
    group.addoption("--backends", metavar="LIST", default=None, help="comma list narrowing the matrix's backends")
    group.addoption("--resolutions", metavar="LIST", default=None, help="comma list like 64x64,32x32")
    group.addoption("--device", metavar="DEVICE", default=None, type=option_type(parse_device),
                    help=f"where pipelines run: {DEVICE_CHOICES} (default: the config's, else auto)")
    group.addoption("--regen-baselines", action="store_true", default=False,
                    help="write the reference backend's images as the new baselines (atomic per case)")
    group.addoption("--baseline-dir", metavar="DIR", default=None,
                    help="where baselines live (default: the config's baseline_dir, ./baselines)")
    group.addoption("--quality-report", metavar="DIR", default=None,
                    help="write results.json, summary.md and candidate/baseline/diff images to DIR")


class AccelgateState:
    """What one pytest process knows: the core session, the gates' parts, the report."""

    def __init__(self, pytest_config: pytest.Config):
        option = pytest_config.option
        source, raw = find_config(Path(pytest_config.rootpath), option.accelgate_config)
        config = build_config(raw, source, Path(pytest_config.rootpath))
        names = lambda text, allowed, flag: parse_name_list(text, allowed, flag) if text else None  # noqa: E731
        resolutions = None
        if option.resolutions:
            resolutions = [parse_resolution(r, "--resolutions") for r in option.resolutions.split(",") if r.strip()]
        narrowing = narrow(config, names(option.models, [m.id for m in config.models], "--models"),
                           names(option.backends, [b.spec.name for b in config.backends], "--backends"), resolutions)
        self.config = config
        self.raw_config = raw
        self.session = Session(config, option.device, narrowing)
        self.report_dir = Path(option.quality_report).resolve() if option.quality_report else None
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._providers: dict[str, Callable[[], dict[str, Any] | None]] = {}
        self.worker_parts: dict[str, dict[str, Any]] | None = None  # the xdist controller's merge of its workers'
        self.results: dict[str, Any] | None = None  # what the report holds after it was written
        self._run_meta: dict[str, Any] | None = None

    def add_part(self, gate: str, provider: Callable[[], dict[str, Any] | None]) -> None:
        """A gate's JSON part, asked for at session end (None: the gate ran no case)."""
        self._providers[gate] = provider

    def parts(self) -> dict[str, dict[str, Any]]:
        if self.worker_parts is not None:
            return self.worker_parts
        found = {gate: provider() for gate, provider in self._providers.items()}
        return {gate: part for gate, part in found.items() if part is not None}

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
        return self._run_meta


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


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    try:
        state = AccelgateState(config)
        config.stash[STATE] = state
        if state.report_dir is not None and not _is_worker(config):
            from accelgate.report.writer import ReportConflict, check_mergeable

            try:
                check_mergeable(state.report_dir, state.run_meta())
            except ReportConflict as error:
                raise pytest.UsageError(f"accelgate: --quality-report={state.report_dir}: {error}") from None
    except ConfigError as error:
        raise pytest.UsageError(f"accelgate: {error}") from None


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
    metafunc.parametrize("accelgate_case", case_params(state, state.session.matrix.for_tasks(tasks)))


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


def _writes_a_baseline(item: pytest.Item) -> bool:
    """The per-image gate's reference cases are what --regen-baselines runs."""
    params = getattr(item, "callspec", None) and item.callspec.params
    case = params.get("accelgate_case") if params else None
    return (case is not None and case.reference and item.get_closest_marker("benchmark") is None
            and "benchmark" not in getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The one regen deselect: with --regen-baselines only the reference backend's per-image
    cases run (they write baselines); every other accelgate case (other backends, speed,
    distribution) is deselected. Tests that are not accelgate cases run as usual."""
    if not config.option.regen_baselines:
        return
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None) and item.callspec.params
        is_case = bool(params) and any(name in params for name in CASE_FIXTURES)
        (drop if is_case and not _writes_a_baseline(item) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist controller: merge a finished worker's parts into the one report's."""
    from accelgate.report.writer import merge_part

    state = node.config.stash.get(STATE, None)
    text = getattr(node, "workeroutput", {}).get(WORKER_PARTS)
    if state is None or text is None:
        return
    merged = state.worker_parts if state.worker_parts is not None else {}
    for gate, part in json.loads(text).items():
        merged[gate] = merge_part(merged.get(gate), part)
    state.worker_parts = merged


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The one place the report is written (a worker sends its parts to the controller instead)."""
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None:
        return
    parts = state.parts()
    if _is_worker(config):
        config.workeroutput[WORKER_PARTS] = json.dumps(parts)
        return
    if state.report_dir is None or not parts:
        return
    from accelgate.report.writer import write_report

    state.results = write_report(state.report_dir, state.run_meta(), parts)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.session.close()
