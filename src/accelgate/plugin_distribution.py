"""The distribution gate's pytest side: options, parametrization, fixture, session tables.

Loaded by accelgate.plugin through `pytest_plugins`, so `--strict-metrics` and
`--prompt-limit` exist wherever the plugin does. Two runs are parametrized here, both over
the config's matrix (no model names in test modules):

- `accelgate_distribution_case`: the prompt-set run (`-m "quality and slow"`): the models of
  `[distribution] models` (default: the matrix's real, gpu models) on their first resolution,
  with real metric models unless `metric_models = "random"`;
- `accelgate_metrics_case`: the CPU run of every metric in the normal suite: the models and
  backends of `[distribution.cpu_run]` on their smallest resolution, a few prompts, always the
  offline random-weight metric models, so each metric code path runs in CI.

At session end each (run, model, resolution) becomes a seed-000-style table (metric rows with
arrows, reference column first), plus the seed-001 table (HPS v2 per style) when the prompt
set has styles, in `summary.md` and under "distribution" in `results.json`. No metric is
computed here: that is accelgate.distribution_run's job.
"""
from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass

import pytest

from accelgate.distribution_config import (
    DEFAULTS, METRICS, check_names, parse_prompt_limit, validate_distribution_table,
)

FIXTURES = {"accelgate_distribution_case": "prompt-set", "accelgate_metrics_case": "cpu-metrics"}
RUN_TITLES = {"prompt-set": "prompt-set run", "cpu-metrics": "CPU metric run"}
HPD_STYLES = {"paintings": "Paintings", "photo": "Photo", "concept-art": "Concept-Art", "anime": "Anime"}
OUTCOMES = {"passed": "✅ passed", "failed": "❌ failed", "error": "💥 error", "skipped": "⏭ skipped"}
RANDOM_MARK = "†"


def _prompt_limit_option(text: str) -> int:
    try:
        return parse_prompt_limit(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("accelgate")
    group.addoption("--strict-metrics", action="store_true", default=False,
                    help="distribution gate: a missing metric weight or data file, an inconclusive non-inferiority "
                         "test or a statistic the set is too small for is a failure, not a skip or a warning "
                         "(real metric models; the random-weight CPU run proves nothing either way)")
    group.addoption("--prompt-limit", metavar="N", type=_prompt_limit_option, default=None,
                    help="distribution gate: use the first N prompts of each prompt set (N >= 1)")


@dataclass(frozen=True)
class DistributionCase:
    run: str  # "prompt-set" | "cpu-metrics"
    case: object  # accelgate.matrix.Case

    @property
    def id(self) -> str:
        return self.case.id


DIST = pytest.StashKey["object"]()


@pytest.hookimpl(trylast=True)  # after accelgate.plugin has built the session state
def pytest_configure(config: pytest.Config) -> None:
    from accelgate.config import ConfigError
    from accelgate.distribution_run import DistributionRun
    from accelgate.plugin import STATE

    state = config.stash.get(STATE, None)
    if state is None:
        return
    source = state.config.source
    table = "tool.accelgate.distribution" if source and source.name == "pyproject.toml" else "distribution"
    where = f"{source or 'the built-in defaults'}, [{table}]"
    settings = dict(state.config.distribution)
    try:
        if not set(DEFAULTS) <= set(settings):  # config.py has not validated it (yet): do it here
            settings = validate_distribution_table(settings, where)
        check_names(settings, [m.id for m in state.config.models], [b.spec.name for b in state.config.backends], where)
    except ConfigError as error:
        raise pytest.UsageError(f"accelgate: {error}") from None
    config.stash[DIST] = DistributionRun(state.run, settings, strict=config.option.strict_metrics,
                                         prompt_limit=config.option.prompt_limit)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from accelgate.plugin import state_of

    for name, run in FIXTURES.items():
        if name not in metafunc.fixturenames:
            continue
        state, dist = state_of(metafunc.config), metafunc.config.stash[DIST]
        params = []
        for case in dist.cases(run, state.matrix):
            marks = [pytest.mark.gpu] if case.model.gpu else []
            reason = state.run.skip_reason(case)
            if reason:
                marks.append(pytest.mark.skip(reason=reason))
            params.append(pytest.param(DistributionCase(run, case), id=case.id, marks=marks))
        if not params:
            cpu = dist.settings["cpu_run"]
            if run == "cpu-metrics" and not (cpu["models"] and cpu["backends"]):
                why = ("[distribution.cpu_run] names no models and backends; list tiny models and a few backends "
                       "there to run every metric on CPU with random-weight metric models")
            elif run == "cpu-metrics":
                why = "the models and backends of [distribution.cpu_run] select none of this (narrowed) matrix"
            else:
                why = ("[distribution] models (default: the matrix's real, gpu models) select none of this "
                       "(narrowed) matrix")
            params = [pytest.param(None, id="none", marks=pytest.mark.skip(
                reason=f"no case for the distribution {RUN_TITLES[run]}: {why}"))]
        metafunc.parametrize(name, params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--regen-baselines writes the reference's baselines and nothing else: no distribution cases."""
    if not config.option.regen_baselines:
        return
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None) and item.callspec.params
        (drop if params and any(name in params for name in FIXTURES) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class DistributionFixture:
    """What a test module sees: ask for a case's distribution verdict."""

    def __init__(self, dist):
        self.dist = dist

    def verdict(self, distribution_case: DistributionCase):
        from accelgate.distribution_run import DistributionWarning

        result = self.dist.evaluate(distribution_case.run, distribution_case.case)
        for note in result.warnings:
            warnings.warn(DistributionWarning(f"{distribution_case.id}: {note}"), stacklevel=2)
        if result.verdict.outcome == "skipped":
            pytest.skip(result.verdict.reason)
        return result.verdict


@pytest.fixture(scope="session")
def accelgate_distribution(request: pytest.FixtureRequest) -> DistributionFixture:
    return DistributionFixture(request.config.stash[DIST])


# ------------------------------------------------------------------------------- session end
@pytest.hookimpl(tryfirst=True)  # before accelgate.plugin writes the report
def pytest_sessionfinish(session: pytest.Session) -> None:
    from accelgate.plugin import STATE

    state, dist = session.config.stash.get(STATE, None), session.config.stash.get(DIST, None)
    if state is None or dist is None or not dist.results:
        return
    backends = [b.spec.name for b in state.config.backends]
    state.extra_sections.extend(tables(dist.results, state.config.reference, backends))
    state.extra_json["distribution"] = {
        "reference": state.config.reference, "strict_metrics": dist.strict, "prompt_limit": dist.prompt_limit,
        "confidence": dist.settings["confidence"], "cases": [r.as_json() for r in dist.results],
    }
    if state.run.report_dir is not None and not state.run.results:  # only distribution cases ran
        from accelgate.report import write_report

        write_report(state.run, state.run.report_dir, state.extra_sections, state.extra_json)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    from accelgate.plugin import STATE

    dist = config.stash.get(DIST, None)
    if dist is None or not dist.results:
        return
    from accelgate.runner import summary_counts

    counts = summary_counts([result.verdict for result in dist.results])
    terminalreporter.section("accelgate distribution")
    terminalreporter.write_line("cases: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                                + ("; --strict-metrics" if dist.strict else ""))
    if any(r.random_weights for r in dist.results if r.verdict.outcome in ("passed", "failed")):
        terminalreporter.write_line(f"{RANDOM_MARK} values from random-weight metric models: they exercise the code "
                                    "paths and carry no quality meaning", yellow=True)
    for result in dist.results:
        for note in result.warnings:
            terminalreporter.write_line(f"WARNING {result.case.id}: {note}", yellow=True)
    state = config.stash.get(STATE, None)
    if state is not None and state.run.report_dir is not None and not state.run.results:
        terminalreporter.write_line(f"report: {state.run.report_dir / 'summary.md'} and "
                                    f"{state.run.report_dir / 'results.json'}")


# ------------------------------------------------------------------------------- tables
def _fmt(metric: str, value: float | None) -> str:
    """The seeds' precision (HPS 2 decimals, the rest 3); small values (KID, random-weight models) 3 digits."""
    if value is None:
        return "n/a"
    if value != 0 and abs(value) < 0.1:
        return f"{value:.3g}"
    return f"{value:.{2 if metric == 'hps' else 3}f}"


def _cell(metric: str, summary, random_weights: bool) -> str:
    if summary is None:
        return "-"
    if summary.value is None:  # only InsufficientSamples leaves a statistic out (see distribution_measure)
        return "n/a (too few images)"
    text = _fmt(metric, summary.value)
    if summary.std is not None:
        text += f" ± {_fmt(metric, summary.std)}"
    elif summary.low is not None and summary.high is not None:
        text += f" ± {_fmt(metric, (summary.high - summary.low) / 2)}"
    return text + (f" {RANDOM_MARK}" if random_weights else "")


def _status(result, metric: str) -> str:
    for check in result.verdict.checks:
        if check.metric == metric and not check.passed:
            return " ❌"
    return " ⚠️" if any(note.startswith(f"{metric}: ") for note in result.warnings) else ""


LEGEND = ("Same prompts and seeds for every backend; each backend is gated on its delta vs the reference. ± is "
          "the half-width of the 95% CI of the mean over prompts (IS and KID: ± std over splits / subsets, as in the "
          "seeds). CLIP score is 100 x cosine (torchmetrics, the diffusers guide; OneDiff's Kolors table prints the "
          "cosine); HPS v2 is 100 x cosine, as published. ❌ failed gate; ⚠️ inconclusive (passed, not shown; "
          "fails under --strict-metrics); '-' where a metric compares with the reference's own images.")


def tables(results, reference: str, backend_order: list[str]) -> list[str]:
    """A legend, then one seed-000-style table per (run, model, resolution), with the seed-001 table after it."""
    groups: dict[tuple, list] = {}
    for result in results:
        groups.setdefault((result.run, result.case.model.id, result.case.resolution), []).append(result)
    order = {name: i for i, name in enumerate([reference] + [b for b in backend_order if b != reference])}
    sections = ["## Distribution metrics\n\n" + LEGEND]
    for (run, model, resolution), group in groups.items():
        group = sorted(group, key=lambda r: order.get(r.case.backend.name, len(order)))
        measured = [r for r in group if r.summaries]
        ref_summaries = next((r.reference for r in measured), {})
        random_weights = any(r.random_weights for r in measured)
        candidates = [r for r in group if not r.case.reference]
        header = ["Metric", f"{reference} (reference)"] + [r.case.backend.name for r in candidates]
        rows = [header, ["---"] * len(header)]
        for name in [n for n in METRICS if any(n in r.summaries for r in measured)]:
            metric, marked = METRICS[name], random_weights and METRICS[name].needs is not None
            own = metric.kind != "pair" and name not in ("fid", "kid")  # distances to the reference: '-' there
            rows.append([metric.label, _cell(name, ref_summaries.get(name), marked) if own else "-"]
                        + [_cell(name, r.summaries.get(name), marked) + _status(r, name) for r in candidates])
        ref_result = next((r for r in group if r.case.reference), None)
        rows.append(["Verdict", OUTCOMES.get(ref_result.verdict.outcome, "") if ref_result else "(reference set)"]
                    + [OUTCOMES.get(r.verdict.outcome, r.verdict.outcome) for r in candidates])
        width, height = resolution
        lines = [f"### {model} @ {width}x{height} ({RUN_TITLES[run]})", _caption(measured, random_weights),
                 "\n".join("| " + " | ".join(r) + " |" for r in rows)]
        notes = [f"- **{r.case.backend.name}**: {r.verdict.reason.splitlines()[0]}" for r in group
                 if r.verdict.outcome != "passed" and r.verdict.reason]
        notes += [f"- **{r.case.backend.name}** ⚠️ {note}" for r in group for note in r.warnings]
        notes += sorted({f"- **{r.case.backend.name}**: tolerance loosened: {c.reason}" for r in group
                         for c in r.verdict.checks if c.reason})
        if notes:
            lines.append("\n".join(notes))
        style_table = _style_table(group, ref_summaries, reference, random_weights)
        if style_table:
            lines.append(style_table)
        sections.append("\n\n".join(lines))
    return sections


def _caption(measured, random_weights: bool) -> str:
    if not measured:
        return "No backend could be measured (see the verdicts)."
    from accelgate.metrics.offline import RANDOM_LABEL

    labels = sorted({label.replace(f", {RANDOM_LABEL}", "") for r in measured for label in r.metric_models.values()})
    text = f"Prompt set: {measured[0].prompt_set}. Metric models: {'; '.join(labels)}."
    if random_weights:
        text += (f"\n\n**{RANDOM_MARK} Random-weight metric models**, built offline with seeded random weights: their "
                 "values exercise every code path and the gate, and carry no quality meaning.")
    return text


def _style_table(group, ref_summaries, reference: str, random_weights: bool) -> str:
    """Seed 001: HPS v2 per style (Paintings, Photo, Concept-Art, Anime) and the average, +/- CI.

    The average is the mean over all prompts; HPD v2's styles are interleaved, so any prompt
    limit keeps them balanced and it equals the seed's mean of the style means to within one prompt.
    """
    styled = [(reference, ref_summaries.get("hps"), random_weights)] + [
        (r.case.backend.name, r.summaries.get("hps"), r.random_weights) for r in group if not r.case.reference]
    styles = [s for s in HPD_STYLES if any(s in (x.by_style if x else {}) for _, x, _ in styled)]
    styles += list(dict.fromkeys(s for _, x, _ in styled if x for s in x.by_style if s not in HPD_STYLES))
    if not styles:
        return ""
    rows = [["Backend"] + [HPD_STYLES.get(s, s) for s in styles] + ["Average"]]
    rows.append(["---"] * len(rows[0]))
    for name, summary, is_random in styled:
        if summary is None:
            continue
        cells = []
        for style in styles:
            value, low, high, _ = summary.by_style.get(style, (None, None, None, 0))
            if value is None:
                cells.append("-")
                continue
            spread = f" ± {_fmt('hps', (high - low) / 2)}" if low is not None else ""
            cells.append(_fmt("hps", value) + spread + (f" {RANDOM_MARK}" if is_random else ""))
        label = f"{name} (reference)" if name == reference else name
        rows.append([label] + cells + [_cell("hps", summary, is_random)])
    return ("#### HPS v2 per style\n\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows))
