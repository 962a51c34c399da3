"""The per-image gate's part of the report, rendered from its results.json part alone.

summary.md: one table per model and resolution, the way the seeds print theirs: metric rows
with an arrow for the better direction, the reference backend's column first, one column per
backend, n/a where a backend cannot serve the model. A skipped or n/a cell points at its
reason by label (S1, N2: listed once at the end of the report, see `report.overview`)
instead of repeating a 350-character reason under every table.

index.html adds, per model and resolution, the image grid a person looks at first: one row
per prompt, one column per backend (the reference first), each cell the candidate image
(opening full size) coloured by its case's verdict.
"""
from __future__ import annotations

from typing import Any

from accelgate.metrics.catalog import PER_IMAGE
from accelgate.quality.lifecycle import change_line
from accelgate.report.markdown import OUTCOME_MARK, table
from accelgate.report.overview import reason_labels
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


def _groups(part: dict[str, Any], reference: str):
    """(model, resolution, backends in the config's order, case by backend, n/a reason by backend)
    for every model and resolution with a case that ran."""
    cases = part.get("cases", [])
    order = list(dict.fromkeys([reference] + part.get("backend_order", []) + [c["backend"] for c in cases]))
    by_key = {(c["model"], c["backend"], _resolution(c)): c for c in cases}
    na = {(n["model"], n["backend"], _resolution(n)): n["reason"] for n in part.get("not_applicable", [])}
    for model, resolution in sorted({(c["model"], _resolution(c)) for c in cases if c["outcome"] != "skipped"}):
        backends = [b for b in order if (model, b, resolution) in by_key or (model, b, resolution) in na]
        yield (model, resolution, backends, {b: by_key.get((model, b, resolution)) for b in backends},
               {b: na[(model, b, resolution)] for b in backends if (model, b, resolution) in na})


def _verdict_cell(case: dict[str, Any] | None, na_reason: str | None, labels: dict) -> str:
    if case is None:
        return f"n/a ({labels.get(('n/a', na_reason), '?')})" if na_reason else "-"
    mark = OUTCOME_MARK.get(case["outcome"], case["outcome"])
    return f"{mark} ({labels.get(('skipped', case.get('reason')), '?')})" if case["outcome"] == "skipped" else mark


def model_tables(part: dict[str, Any], reference: str, labels: dict | None = None) -> list[str]:
    """One seed-style table per model and resolution, backends in the config's order."""
    labels = labels or {}
    sections = []
    for model, resolution, backends, by_backend, na in _groups(part, reference):
        header = ["Metric"] + [f"{b} (reference)" if b == reference else b for b in backends]
        rows = [[f"{m.label} {m.arrow}"] + [_cell(by_backend[b], name, na.get(b)) for b in backends]
                for name, m in PER_IMAGE.items()]
        verdict_row, time_row = ["Verdict"], ["Generate time (s)"]
        for b in backends:
            case = by_backend[b]
            verdict_row.append(_verdict_cell(case, na.get(b), labels))
            seconds = case.get("timing", {}).get("generate_s") if case else None
            time_row.append(f"{seconds:.2f}" if seconds is not None else "-")
        notes = []
        for b in backends:
            case = by_backend[b]
            if case and case["outcome"] in ("failed", "error") and case.get("reason"):
                notes.append(f"- **{b}**: {case['reason'].splitlines()[0]}")
            loosened = sorted({c["loosened_because"] for c in (case or {}).get("metrics", {}).values()
                               if c.get("loosened_because")})
            notes += [f"- **{b}**: tolerance loosened: {reason}" for reason in loosened]
        title = f"## {model} @ {resolution[0]}x{resolution[1]}"
        sections.append("\n\n".join([title, "Compared with the stored reference baseline, worst image per metric.",
                                     table(header, rows + [verdict_row, time_row])] + (["\n".join(notes)] if notes else [])))
    return sections


def _grid_note(case: dict[str, Any] | None, na_reason: str | None, labels: dict) -> str:
    """What a grid cell without an image says instead: why there is none, short."""
    if case is None:
        return f"n/a ({labels.get(('n/a', na_reason), '?')})" if na_reason else ""
    if case["outcome"] == "skipped":
        return f"skipped ({labels.get(('skipped', case.get('reason')), '?')})"
    reason = (case.get("reason") or "").splitlines()
    return f"{case['outcome']}: {reason[0][:90]}" if reason else case["outcome"]


def grids(part: dict[str, Any], results: dict[str, Any]) -> list[dict[str, Any]]:
    """index.html's image grids: per model and resolution with images, one row per prompt, one
    cell per backend holding its candidate image (none where the case made no image: the cell
    says why, pointing at the reason's label)."""
    reference = results.get("reference") or "eager"
    labels = reason_labels(results)
    out = []
    for model, resolution, backends, by_backend, na in _groups(part, reference):
        made = [c for c in by_backend.values() if c and c.get("images")]
        if not made:
            continue
        prompts = max((c["images"] for c in made), key=len)
        rows = []
        for index, prompt in enumerate(prompts):
            cells = []
            for backend in backends:
                case = by_backend[backend]
                images = (case or {}).get("images") or []
                image = images[index] if index < len(images) and images[index].get("candidate") else None
                metrics = ", ".join(f"{k} {fmt_value(v) if not isinstance(v, str) else v}"
                                    for k, v in (image or {}).get("metrics", {}).items())
                cells.append({"backend": backend, "outcome": case["outcome"] if case else "n/a",
                              "case": case["id"] if case else "", "src": image["candidate"] if image else "",
                              "title": metrics, "note": "" if image else _grid_note(case, na.get(backend), labels)})
            rows.append({"prompt": prompt.get("prompt", ""), "seed": prompt.get("seed"), "cells": cells})
        out.append({"model": model, "resolution": f"{resolution[0]}x{resolution[1]}", "reference": reference,
                    "backends": backends, "rows": rows})
    return out


def baseline_store_lines(part: dict[str, Any]) -> list[str]:
    """What a regen changed, and what the store holds that the matrix no longer has."""
    lines = []
    if part.get("regen_changes"):
        lines.append("**Baselines regenerated** (against the ones they replaced):\n\n"
                     + "\n".join(f"- {change_line(c)}" for c in part["regen_changes"]))
    if part.get("pruned_baselines"):
        lines.append("**Baselines pruned:**\n\n" + "\n".join(f"- `{o['path']}`" for o in part["pruned_baselines"]))
    if part.get("orphaned_baselines"):
        lines.append("**Orphaned baselines** (models or resolutions no longer in the matrix; `--prune-baselines` "
                     "removes them):\n\n" + "\n".join(f"- `{o['path']}` ({o['bytes'] / 1024:.0f} KiB)"
                                                      for o in part["orphaned_baselines"]))
    return lines


def render(part: dict[str, Any], results: dict[str, Any]) -> list[str]:
    stale = [f"**{model}: weights changed since its baselines were written.** {why}"
             for model, why in sorted(part.get("stale_models", {}).items())]
    return (["\n\n".join(stale)] if stale else []) + baseline_store_lines(part) + model_tables(
        part, results.get("reference") or "eager", reason_labels(results))


def html(part: dict[str, Any], results: dict[str, Any]) -> list[dict[str, Any]]:
    """index.html: the image grids, then the same tables as summary.md."""
    return [{"kind": "grid", **grid} for grid in grids(part, results)] + [
        {"kind": "markdown", "text": text} for text in render(part, results)]


SECTION = register_section(Section("quality", None, 0, render, html=html))
