"""The distribution gate's pytest side: options, parametrization, fixture, terminal summary.

Loaded by accelgate.plugin, so `--strict-metrics` and `--prompt-limit` exist wherever the
plugin does. Two runs are parametrized here, both over the config's matrix (no model names
in test modules):

- `accelgate_distribution_case`: the prompt-set run (`-m "quality and slow"`): the models of
  `[distribution] models` (default: the matrix's real, gpu models) on their first resolution,
  with real metric models unless `metric_models = "random"`;
- `accelgate_metrics_case`: the CPU run of every metric in the normal suite: the models and
  backends of `[distribution.cpu_run]` on their smallest resolution, a few prompts, always the
  offline random-weight metric models, so each metric code path runs in CI.

The gate's results go to the report as its part (`accelgate.distribution.report` renders the
seed-000 / seed-001 tables from it). No metric is computed here: that is
accelgate.distribution.run's job.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest

from accelgate.config.schema import option_type, parse_prompt_limit
from accelgate.distribution import report  # noqa: F401  (registers the gate's report section)
from accelgate.distribution.report import RANDOM_MARK, RUN_TITLES
from accelgate.distribution.run import DistributionRun, DistributionWarning
from accelgate.plugin import STATE, case_params, no_case_param, state_of
from accelgate.report.terminal import outcome_lines, write_lines
from accelgate.session import raise_case_error
from accelgate.verdict import count_outcomes

FIXTURES = {"accelgate_distribution_case": "prompt-set", "accelgate_metrics_case": "cpu-metrics"}
DIST = pytest.StashKey[DistributionRun]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("accelgate")
    group.addoption("--strict-metrics", action="store_true", default=False,
                    help="distribution gate: a missing metric weight or data file, an inconclusive non-inferiority "
                         "test or a statistic the set is too small for is a failure, not a skip or a warning "
                         "(real metric models; the random-weight CPU run proves nothing either way)")
    group.addoption("--prompt-limit", metavar="N", type=option_type(parse_prompt_limit), default=None,
                    help="distribution gate: use the first N prompts of each prompt set (N >= 1)")


@dataclass(frozen=True)
class DistributionCase:
    run: str  # "prompt-set" | "cpu-metrics"
    case: object  # accelgate.matrix.Case

    @property
    def id(self) -> str:
        return self.case.id


@pytest.hookimpl(trylast=True)  # after accelgate.plugin has built the session
def pytest_configure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    dist = DistributionRun(state.session, dict(state.config.distribution), strict=config.option.strict_metrics,
                           prompt_limit=config.option.prompt_limit)
    config.stash[DIST] = dist
    state.add_part("distribution", dist.report_part, record=lambda param, outcome, reason: dist.record_missing(
        param.run, param.case, outcome, reason))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, run in FIXTURES.items():
        if name not in metafunc.fixturenames:
            continue
        state, dist = state_of(metafunc.config), metafunc.config.stash[DIST]
        cases = dist.cases(run, state.session.matrix)
        params = [pytest.param(DistributionCase(run, p.values[0]), id=p.id, marks=p.marks)
                  for p in case_params(state, cases)]
        if not params:
            params = [no_case_param(name, f"no case for the distribution {RUN_TITLES[run]}: {dist.why_no_case(run)}")]
        metafunc.parametrize(name, params)


class DistributionFixture:
    """What a test module sees: ask for a case's distribution verdict."""

    def __init__(self, dist: DistributionRun):
        self.dist = dist

    def verdict(self, distribution_case: DistributionCase):
        result = self.dist.evaluate(distribution_case.run, distribution_case.case)
        for note in result.warnings:
            warnings.warn(DistributionWarning(f"{distribution_case.id}: {note}"), stacklevel=2)
        if result.verdict.outcome == "skipped":
            pytest.skip(result.verdict.reason)
        raise_case_error(result.verdict)
        return result.verdict


@pytest.fixture(scope="session")
def accelgate_distribution(request: pytest.FixtureRequest) -> DistributionFixture:
    return DistributionFixture(request.config.stash[DIST])


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    part = state.parts().get("distribution") if state is not None else None
    if not part:
        return
    cases = part["cases"]
    terminalreporter.section("accelgate distribution")
    terminalreporter.write_line("cases: " + ", ".join(f"{n} {k}" for k, n in sorted(count_outcomes(cases).items()))
                                + ("; --strict-metrics" if part.get("strict_metrics") else ""))
    write_lines(terminalreporter, outcome_lines(cases))
    if any(c.get("random_weights") for c in cases if c["outcome"] in ("passed", "failed")):
        terminalreporter.write_line(f"{RANDOM_MARK} values from random-weight metric models: they exercise the code "
                                    "paths and carry no quality meaning", yellow=True)
    for case in cases:
        for note in case.get("warnings", []):
            terminalreporter.write_line(f"WARNING {case['id']}: {note}", yellow=True)
