"""The pytest plugin: options, markers, parametrization, fixtures. No metric lives here.

Registered through the `pytest11` entry point, so any repository that installs accelgate
gets `--models/--backends/--resolutions/--device`, `--regen-baselines`, `--baseline-dir`,
`--quality-report`, and the `accelgate_case` parametrization over its own config's matrix.
Session state lives in one object (`AccelgateState`) kept in the pytest config's stash.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from accelgate.config import (
    DEVICE_CHOICES, ConfigError, build_config, find_config, parse_device, parse_name_list, parse_resolution,
    resolve_device,
)
from accelgate.models.registry import TASKS

# Nothing may download at test time: make the HF libraries fail fast on a cache miss
# (they read these at import, and the plugin loads before any of them is imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

MARKERS = {
    "quality": "image-quality gate cases (accelerated backend vs stored PyTorch baseline)",
    "gpu": "needs a CUDA GPU and real model weights; skipped with a reason elsewhere",
    "slow": "long runs: prompt-set metrics, cold compiles",
    "benchmark": "speed and memory measurements (pytest-benchmark)",
    "accelgate_tasks(*tasks)": f"the tasks whose cases parametrize `accelgate_case` here; tasks: {', '.join(TASKS)}",
}


def _device_option(text: str) -> str:
    try:
        return parse_device(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("accelgate", "accelgate: quality and speed gate for accelerated diffusion pipelines")
    group.addoption("--accelgate-config", metavar="FILE", default=None,
                    help="TOML file with the matrix (same keys as [tool.accelgate] in pyproject.toml, at top level)")
    group.addoption("--models", metavar="LIST", default=None, help="comma list narrowing the matrix's models")
    group.addoption("--backends", metavar="LIST", default=None, help="comma list narrowing the matrix's backends")
    group.addoption("--resolutions", metavar="LIST", default=None, help="comma list like 64x64,32x32")
    group.addoption("--device", metavar="DEVICE", default=None, type=_device_option,
                    help=f"where pipelines run: {DEVICE_CHOICES} (default: the config's, else auto)")
    group.addoption("--regen-baselines", action="store_true", default=False,
                    help="write the reference backend's images as the new baselines (atomic per case)")
    group.addoption("--baseline-dir", metavar="DIR", default=None,
                    help="where baselines live (default: the config's baseline_dir, ./baselines)")
    group.addoption("--quality-report", metavar="DIR", default=None,
                    help="write results.json, summary.md and candidate/baseline/diff images to DIR")


class AccelgateState:
    """Everything one pytest session knows about the matrix and its results."""

    def __init__(self, pytest_config: pytest.Config):
        from accelgate.baselines import BaselineStore, device_class
        from accelgate.matrix import build_matrix
        from accelgate.runner import QualityRun

        option = pytest_config.option
        source, raw = find_config(Path(pytest_config.rootpath), option.accelgate_config)
        config = build_config(raw, source, Path(pytest_config.rootpath))
        names = lambda text, allowed, flag: parse_name_list(text, allowed, flag) if text else None  # noqa: E731
        models = names(option.models, [m.id for m in config.models], "--models")
        backends = names(option.backends, [b.spec.name for b in config.backends], "--backends")
        resolutions = None
        if option.resolutions:
            resolutions = [parse_resolution(r, "--resolutions") for r in option.resolutions.split(",") if r.strip()]
        self.matrix = build_matrix(config, models, backends, resolutions)
        self.device = resolve_device(option.device or config.device)
        if not self.device.startswith("cuda"):
            import torch

            torch.set_num_threads(config.threads)  # output differs by a level between thread counts
        baseline_dir = Path(option.baseline_dir).resolve() if option.baseline_dir else config.baseline_dir
        report_dir = Path(option.quality_report).resolve() if option.quality_report else None
        store = BaselineStore(baseline_dir, device_class(self.device), regen_command=lambda case_id: "")
        self.run = QualityRun(config, self.device, self.matrix, store, report_dir, option.regen_baselines)
        store.regen_command = self.run.regen_command
        self.config = config
        self.extra_sections: list[str] = []
        self.extra_json: dict = {}


STATE = pytest.StashKey[AccelgateState]()

# The speed (pytest-benchmark) and distribution-metric parts are plugins of their own,
# loaded with this one so that their options exist before the command line is parsed.
pytest_plugins = ["accelgate.plugin_speed", "accelgate.plugin_distribution"]


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    try:
        config.stash[STATE] = AccelgateState(config)
    except ConfigError as error:
        raise pytest.UsageError(f"accelgate: {error}") from None


def state_of(config: pytest.Config) -> AccelgateState:
    return config.stash[STATE]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "accelgate_case" not in metafunc.fixturenames:
        return
    state = state_of(metafunc.config)
    marker = metafunc.definition.get_closest_marker("accelgate_tasks")
    tasks = tuple(marker.args) if marker and marker.args else TASKS
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise pytest.UsageError(f"accelgate_tasks{unknown} in {metafunc.definition.nodeid}: tasks are {', '.join(TASKS)}")
    params = []
    for case in state.matrix.for_tasks(tasks):
        marks = [pytest.mark.gpu] if case.model.gpu else []
        reason = state.run.skip_reason(case)
        if reason:
            marks.append(pytest.mark.skip(reason=reason))
        params.append(pytest.param(case, id=case.id, marks=marks))
    metafunc.parametrize("accelgate_case", params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With --regen-baselines only the reference backend's cases run: they write baselines."""
    if not config.option.regen_baselines:
        return
    keep, drop = [], []
    for item in items:
        case = getattr(item, "callspec", None) and item.callspec.params.get("accelgate_case")
        (drop if case is not None and not case.reference else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class QualityFixture:
    """What a test module sees: ask for a verdict; a skip outcome becomes a pytest skip."""

    def __init__(self, state: AccelgateState):
        self.state = state
        self.run = state.run

    def verdict(self, case):
        verdict = self.run.evaluate(case)
        if verdict.outcome == "skipped":
            pytest.skip(verdict.reason)
        return verdict


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
        from accelgate.verdict import problem

        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        state_of(item.config).run.results.append(problem(case, "skipped", reason.removeprefix("Skipped: ")))
    return report


@pytest.fixture(scope="session")
def accelgate(request: pytest.FixtureRequest) -> QualityFixture:
    return QualityFixture(state_of(request.config))


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    if state is None or state.run.report_dir is None or not (state.run.results or state.extra_sections):
        return
    from accelgate.report import write_report

    write_report(state.run, state.run.report_dir, state.extra_sections, state.extra_json)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or not state.run.results:
        return
    from accelgate.runner import summary_counts

    run = state.run
    write = terminalreporter.write_line
    terminalreporter.section("accelgate")
    counts = summary_counts(run.results)
    write(f"device {run.device} (baselines: {run.store.device_class}); cases: "
          + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
          + f"; {len(state.matrix.not_applicable)} combinations n/a (see the report)")
    drift = [v for v in run.results if v.reference and v.outcome == "failed" and v.checks]
    for verdict in drift:
        write(f"REFERENCE DRIFT {verdict.case_id}: {verdict.reason.splitlines()[0]}", red=True)
    for model, why in sorted(run.stale_models.items()):
        write(f"STALE {model}: {why}", red=True)
    for path in run.written_baselines:
        write(f"baseline written: {path}")
    if run.report_dir is not None:
        write(f"report: {run.report_dir / 'summary.md'} and {run.report_dir / 'results.json'}")
