"""The distribution gate's part of summary.md, rendered from its results.json part alone.

A legend, then one seed-000-style table per (run, model, resolution): metric rows with
arrows, the reference column first, one column per backend, and the seed-001 table (HPS v2
per style) when the prompt set has styles.
"""
from __future__ import annotations

from typing import Any

from accelgate.distribution.plots import forest_plots
from accelgate.metrics.catalog import DISTRIBUTION as METRICS
from accelgate.metrics.catalog import RANDOM_LABEL
from accelgate.report.markdown import OUTCOME_MARK, table
from accelgate.report.overview import reason_labels
from accelgate.report.sections import Section, register_section

RUN_TITLES = {"prompt-set": "prompt-set run", "cpu-metrics": "CPU metric run"}
HPD_STYLES = {"paintings": "Paintings", "photo": "Photo", "concept-art": "Concept-Art", "anime": "Anime"}
RANDOM_MARK = "†"


def fmt(metric: str, value: float | None) -> str:
    """The seeds' precision (HPS 2 decimals, the rest 3); small values (KID, random-weight models) 3 digits."""
    if value is None:
        return "n/a"
    if value != 0 and abs(value) < 0.1:
        return f"{value:.3g}"
    return f"{value:.{2 if metric == 'hps' else 3}f}"


def _cell(metric: str, summary: dict | None, random_weights: bool) -> str:
    if summary is None:
        return "-"
    if summary.get("value") is None:  # only InsufficientSamples leaves a statistic out (see distribution.measure)
        return "n/a (too few images)"
    text = fmt(metric, summary["value"])
    if summary.get("std") is not None:
        text += f" ± {fmt(metric, summary['std'])}"
    elif summary.get("ci") and None not in summary["ci"]:
        low, high = summary["ci"]
        text += f" ± {fmt(metric, (high - low) / 2)}"
    return text + (f" {RANDOM_MARK}" if random_weights else "")


def _status(case: dict, metric: str) -> str:
    check = case.get("metrics", {}).get(metric)
    if check is not None and not check["passed"]:
        return " ❌"
    return " ⚠️" if any(note.startswith(f"{metric}: ") for note in case.get("warnings", [])) else ""


LEGEND = ("Same prompts and seeds for every backend; each backend is gated on its delta vs the reference. ± is "
          "the half-width of the 95% CI of the mean over prompts (IS and KID: ± std over splits / subsets, as in the "
          "seeds). CLIP score is 100 x cosine (torchmetrics, the diffusers guide; OneDiff's Kolors table prints the "
          "cosine); HPS v2 is 100 x cosine, as published. ❌ failed gate; ⚠️ inconclusive (passed, not shown; "
          "fails under --strict-metrics); '-' where a metric compares with the reference's own images.")


def _mark(case: dict, labels: dict) -> str:
    """The verdict cell; a skipped case points at its reason, listed once at the end of the report."""
    mark = OUTCOME_MARK.get(case["outcome"], case["outcome"])
    return f"{mark} ({labels.get(('skipped', case.get('reason')), '?')})" if case["outcome"] == "skipped" else mark


def tables(part: dict[str, Any], labels: dict | None = None) -> list[str]:
    """A legend, then one seed-000-style table per (run, model, resolution), with the seed-001 table after it."""
    labels = labels or {}
    reference = part.get("reference") or "eager"
    groups: dict[tuple, list] = {}
    for case in part.get("cases", []):
        groups.setdefault((case["run"], case["model"], tuple(case["resolution"])), []).append(case)
    backend_order = part.get("backend_order", [])
    order = {name: i for i, name in enumerate([reference] + [b for b in backend_order if b != reference])}
    sections = ["## Distribution metrics\n\n" + LEGEND]
    for (run, model, resolution), group in groups.items():
        group = sorted(group, key=lambda c: order.get(c["backend"], len(order)))
        measured = [c for c in group if c.get("summary")]
        ref_summaries = next((c["reference_summary"] for c in measured), {})
        random_weights = any(c.get("random_weights") for c in measured)
        candidates = [c for c in group if not c.get("reference")]
        header = ["Metric", f"{reference} (reference)"] + [c["backend"] for c in candidates]
        rows = []
        for name in [n for n in METRICS if any(n in c["summary"] for c in measured)]:
            metric, marked = METRICS[name], random_weights and METRICS[name].needs is not None
            own = metric.kind != "pair" and name not in ("fid", "kid")  # distances to the reference: '-' there
            rows.append([metric.row_label, _cell(name, ref_summaries.get(name), marked) if own else "-"]
                        + [_cell(name, c["summary"].get(name), marked) + _status(c, name) for c in candidates])
        ref_case = next((c for c in group if c.get("reference")), None)
        rows.append(["Verdict", _mark(ref_case, labels) if ref_case else "(reference set)"]
                    + [_mark(c, labels) for c in candidates])
        width, height = resolution
        lines = [f"### {model} @ {width}x{height} ({RUN_TITLES.get(run, run)})", _caption(measured, random_weights),
                 table(header, rows)]
        notes = [f"- **{c['backend']}**: {c['reason'].splitlines()[0]}" for c in group
                 if c["outcome"] in ("failed", "error") and c.get("reason")]
        notes += [f"- **{c['backend']}** ⚠️ {note}" for c in group for note in c.get("warnings", [])]
        notes += sorted({f"- **{c['backend']}**: tolerance loosened: {check['loosened_because']}" for c in group
                         for check in c.get("metrics", {}).values() if check.get("loosened_because")})
        if notes:
            lines.append("\n".join(notes))
        style_table = _style_table(group, ref_summaries, reference, random_weights)
        if style_table:
            lines.append(style_table)
        sections.append("\n\n".join(lines))
    return sections


def _caption(measured: list[dict], random_weights: bool) -> str:
    if not measured:
        return "No backend could be measured (see the verdicts)."
    labels = sorted({label.replace(f", {RANDOM_LABEL}", "") for c in measured
                     for label in c.get("metric_models", {}).values()})
    text = f"Prompt set: {measured[0].get('prompt_set')}. Metric models: {'; '.join(labels)}."
    if random_weights:
        text += (f"\n\n**{RANDOM_MARK} Random-weight metric models**, built offline with seeded random weights: their "
                 "values exercise every code path and the gate, and carry no quality meaning.")
    return text


def _style_table(group: list[dict], ref_summaries: dict, reference: str, random_weights: bool) -> str:
    """Seed 001: HPS v2 per style (Paintings, Photo, Concept-Art, Anime) and the average, +/- CI.

    The average is the mean over all prompts; HPD v2's styles are interleaved, so any prompt
    limit keeps them balanced and it equals the seed's mean of the style means to within one prompt.
    """
    styled = [(reference, ref_summaries.get("hps"), random_weights)] + [
        (c["backend"], c.get("summary", {}).get("hps"), c.get("random_weights")) for c in group
        if not c.get("reference")]
    by_style = lambda summary: (summary or {}).get("by_style", {})  # noqa: E731
    styles = [s for s in HPD_STYLES if any(s in by_style(x) for _, x, _ in styled)]
    styles += list(dict.fromkeys(s for _, x, _ in styled for s in by_style(x) if s not in HPD_STYLES))
    if not styles:
        return ""
    rows = []
    for name, summary, is_random in styled:
        if summary is None:
            continue
        cells = []
        for style in styles:
            entry = by_style(summary).get(style)
            if entry is None or entry.get("value") is None:
                cells.append("-")
                continue
            low, high = entry.get("ci") or (None, None)
            spread = f" ± {fmt('hps', (high - low) / 2)}" if low is not None and high is not None else ""
            cells.append(fmt("hps", entry["value"]) + spread + (f" {RANDOM_MARK}" if is_random else ""))
        label = f"{name} (reference)" if name == reference else name
        rows.append([label] + cells + [_cell("hps", summary, is_random)])
    header = ["Backend"] + [HPD_STYLES.get(s, s) for s in styles] + ["Average"]
    return "#### HPS v2 per style\n\n" + table(header, rows)


def render(part: dict[str, Any], results: dict[str, Any]) -> list[str]:
    return tables(part, reason_labels(results))


def figures(part: dict[str, Any], results: dict[str, Any]) -> list:
    return forest_plots(part, results, RUN_TITLES)


SECTION = register_section(Section("distribution", "distribution", 1, render, figures=figures))
