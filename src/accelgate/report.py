"""results.json (an interface: CI dashboards read it) and summary.md (people read it).

summary.md follows the seeds' tables: one table per model and resolution, metric rows with
an arrow for the better direction, the reference backend's column first, one column per
backend, n/a where a backend cannot serve the model. Other modules (distribution metrics,
speed) add their own sections through `extra_sections` / `extra_json`.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from accelgate.config import format_resolution
from accelgate.metrics.pairwise import PAIRWISE_METRICS
from accelgate.runner import summary_counts
from accelgate.verdict import Verdict, _fmt

OUTCOME_MARK = {"passed": "✅ passed", "failed": "❌ failed", "error": "💥 error", "skipped": "⏭ skipped"}
METRIC_LABEL = {"ssim": "SSIM", "psnr": "PSNR (dB)", "max_abs": "Max abs diff (levels)", "color_shift": "Colour shift (levels)"}


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(temp, path)


def results_json(run, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    counts = summary_counts(run.results)
    data = {
        "device": run.device,
        "device_class": run.store.device_class,
        "config": str(run.config.source) if run.config.source else None,
        "reference": run.config.reference,
        "summary": counts,
        "model_hashes": dict(run.model_hashes),
        "cases": [v.as_json() for v in run.results],
        "not_applicable": [
            {"model": n.model, "backend": n.backend, "resolution": list(n.resolution), "reason": n.reason}
            for n in run.matrix.not_applicable
        ],
    }
    data.update(extra or {})
    return data


METRIC_FORMAT = {"ssim": "{:.4f}", "psnr": "{:.1f}", "max_abs": "{:.0f}", "color_shift": "{:.2f}"}


def _cell(verdict: Verdict | None, metric: str, na_reason: str | None) -> str:
    if verdict is None:
        return "n/a" if na_reason else "-"
    for check in verdict.checks:
        if check.metric == metric:
            text = _fmt(check.value) if check.value in (float("inf"), float("-inf")) else \
                METRIC_FORMAT.get(metric, "{:.4f}").format(check.value)
            return text if check.passed else f"**{text}** ❌"
    return "skipped" if verdict.outcome == "skipped" else "-"


def model_tables(run) -> list[str]:
    """One seed-style table per model and resolution."""
    reference = run.config.reference
    backends = [c.spec.name for c in run.config.backends]
    backends = [reference] + [b for b in backends if b != reference]
    by_key = {(v.model, v.backend, tuple(v.resolution)): v for v in run.results}
    na = {(n.model, n.backend, tuple(n.resolution)): n.reason for n in run.matrix.not_applicable}
    keys = sorted({(v.model, tuple(v.resolution)) for v in run.results if v.outcome != "skipped"},
                  key=lambda k: (k[0], k[1]))
    sections = []
    for model, resolution in keys:
        shown = [b for b in backends if (model, b, resolution) in by_key or (model, b, resolution) in na]
        header = ["Metric"] + [f"{b} (reference)" if b == reference else b for b in shown]
        rows = [header, ["---"] * len(header)]
        for name, metric in PAIRWISE_METRICS.items():
            arrow = "⬆️" if metric.higher_is_better else "⬇️"
            rows.append([f"{METRIC_LABEL[name]} {arrow}"] + [
                _cell(by_key.get((model, b, resolution)), name, na.get((model, b, resolution))) for b in shown])
        verdict_row, time_row = ["Verdict"], ["Generate time (s)"]
        for b in shown:
            verdict = by_key.get((model, b, resolution))
            verdict_row.append(OUTCOME_MARK.get(verdict.outcome, verdict.outcome) if verdict else "n/a")
            seconds = verdict.timing.get("generate_s") if verdict else None
            time_row.append(f"{seconds:.2f}" if seconds is not None else "-")
        rows += [verdict_row, time_row]
        table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
        notes = []
        for b in shown:
            verdict = by_key.get((model, b, resolution))
            if verdict and verdict.outcome != "passed" and verdict.reason:
                notes.append(f"- **{b}**: {verdict.reason.splitlines()[0]}")
            elif (model, b, resolution) in na:
                notes.append(f"- **{b}**: n/a, {na[(model, b, resolution)]}")
            loosened = sorted({c.reason for c in (verdict.checks if verdict else []) if c.reason})
            notes += [f"- **{b}**: tolerance loosened: {reason}" for reason in loosened]
        title = f"## {model} @ {format_resolution(resolution)}"
        sections.append("\n\n".join([title, "Compared with the stored reference baseline, worst image per metric.",
                                     table] + (["\n".join(notes)] if notes else [])))
    return sections


def summary_markdown(run, extra_sections: list[str] | None = None) -> str:
    counts = summary_counts(run.results)
    head = [
        "# accelgate quality report",
        "",
        f"Device: `{run.device}` (baselines: `{run.store.device_class}`), reference backend: `{run.config.reference}`.",
        "Cases: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) +
        (f", {len(run.matrix.not_applicable)} n/a" if run.matrix.not_applicable else "") + ".",
    ]
    if run.stale_models:
        head.append("")
        head += [f"**{model}: weights changed since its baselines were written.** {why}"
                 for model, why in sorted(run.stale_models.items())]
    return "\n".join(head) + "\n\n" + "\n\n".join(model_tables(run) + skipped_section(run)
                                                  + list(extra_sections or [])) + "\n"


def skipped_section(run) -> list[str]:
    """Skipped cases grouped by reason: what to install or where to run to cover them."""
    by_reason: dict[str, list[str]] = {}
    for verdict in run.results:
        if verdict.outcome == "skipped":
            by_reason.setdefault(verdict.reason, []).append(verdict.case_id)
    if not by_reason:
        return []
    lines = ["## Skipped", ""]
    for reason, ids in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        shown = ", ".join(ids[:6]) + (f" and {len(ids) - 6} more" if len(ids) > 6 else "")
        lines.append(f"- {len(ids)} case(s): {reason} ({shown})")
    return ["\n".join(lines)]


def write_report(run, directory: Path, extra_sections: list[str] | None = None,
                 extra_json: dict[str, Any] | None = None) -> tuple[Path, Path]:
    directory = Path(directory)
    results = directory / "results.json"
    summary = directory / "summary.md"
    atomic_write_text(results, json.dumps(results_json(run, extra_json), indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(summary, summary_markdown(run, extra_sections))
    return results, summary
