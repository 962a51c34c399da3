"""The per-image gate's part of summary.md, rendered from its results.json part alone.

One table per model and resolution, the way the seeds print theirs: metric rows with an
arrow for the better direction, the reference backend's column first, one column per
backend, n/a where a backend cannot serve the model; then the skipped cases grouped by
reason (what to install or where to run to cover them).
"""
from __future__ import annotations

from typing import Any

from accelgate.metrics.catalog import PER_IMAGE
from accelgate.report.markdown import OUTCOME_MARK, shown, table
from accelgate.report.sections import Section, register_section
from accelgate.verdict import fmt_value


def _resolution(item: dict[str, Any]) -> tuple[int, int]:
    return tuple(item["resolution"])


def _cell(case: dict[str, Any] | None, metric: str, na_reason: str | None) -> str:
    if case is None:
        return "n/a" if na_reason else "-"
    check = case.get("metrics", {}).get(metric)
    if check is None:
        return "skipped" if case["outcome"] == "skipped" else "-"
    value = check["value"]
    if isinstance(value, str):  # "inf", "-inf", "nan": JSON has no such numbers
        text = value
    else:
        text = PER_IMAGE[metric].fmt.format(value) if metric in PER_IMAGE else fmt_value(value)
    return text if check["passed"] else f"**{text}** ❌"


def model_tables(part: dict[str, Any], reference: str) -> list[str]:
    """One seed-style table per model and resolution, backends in the config's order."""
    cases = part.get("cases", [])
    order = list(dict.fromkeys([reference] + part.get("backend_order", []) + [c["backend"] for c in cases]))
    by_key = {(c["model"], c["backend"], _resolution(c)): c for c in cases}
    na = {(n["model"], n["backend"], _resolution(n)): n["reason"] for n in part.get("not_applicable", [])}
    keys = sorted({(c["model"], _resolution(c)) for c in cases if c["outcome"] != "skipped"})
    sections = []
    for model, resolution in keys:
        backends = [b for b in order if (model, b, resolution) in by_key or (model, b, resolution) in na]
        header = ["Metric"] + [f"{b} (reference)" if b == reference else b for b in backends]
        rows = [[f"{m.label} {m.arrow}"] + [_cell(by_key.get((model, b, resolution)), name,
                                                  na.get((model, b, resolution))) for b in backends]
                for name, m in PER_IMAGE.items()]
        verdict_row, time_row = ["Verdict"], ["Generate time (s)"]
        for b in backends:
            case = by_key.get((model, b, resolution))
            verdict_row.append(OUTCOME_MARK.get(case["outcome"], case["outcome"]) if case else "n/a")
            seconds = case.get("timing", {}).get("generate_s") if case else None
            time_row.append(f"{seconds:.2f}" if seconds is not None else "-")
        notes = []
        for b in backends:
            case = by_key.get((model, b, resolution))
            if case and case["outcome"] != "passed" and case.get("reason"):
                notes.append(f"- **{b}**: {case['reason'].splitlines()[0]}")
            elif (model, b, resolution) in na:
                notes.append(f"- **{b}**: n/a, {na[(model, b, resolution)]}")
            loosened = sorted({c["loosened_because"] for c in (case or {}).get("metrics", {}).values()
                               if c.get("loosened_because")})
            notes += [f"- **{b}**: tolerance loosened: {reason}" for reason in loosened]
        title = f"## {model} @ {resolution[0]}x{resolution[1]}"
        sections.append("\n\n".join([title, "Compared with the stored reference baseline, worst image per metric.",
                                     table(header, rows + [verdict_row, time_row])] + (["\n".join(notes)] if notes else [])))
    return sections


def skipped_section(part: dict[str, Any]) -> list[str]:
    """Skipped cases grouped by reason: what to install or where to run to cover them."""
    by_reason: dict[str, list[str]] = {}
    for case in part.get("cases", []):
        if case["outcome"] == "skipped":
            by_reason.setdefault(case["reason"], []).append(case["id"])
    if not by_reason:
        return []
    lines = ["## Skipped", ""]
    for reason, ids in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        lines.append(f"- {len(ids)} case(s): {reason} ({shown(ids)})")
    return ["\n".join(lines)]


def render(part: dict[str, Any], results: dict[str, Any]) -> list[str]:
    stale = [f"**{model}: weights changed since its baselines were written.** {why}"
             for model, why in sorted(part.get("stale_models", {}).items())]
    return (["\n\n".join(stale)] if stale else []) + model_tables(part, results.get("reference") or "eager") \
        + skipped_section(part)


SECTION = register_section(Section("quality", None, 0, render))
