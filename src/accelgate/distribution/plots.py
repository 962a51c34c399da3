"""The distribution gate's forest plot: every backend's delta vs the reference, its interval
and the margin it must stay within, per metric, one figure per (run, model, resolution).

The table says "HPS v2 22.21 ± 12.75 ⚠️"; the plot shows at a glance what the gate decided:
where each backend's interval lies relative to the non-inferiority margin (dashed red line,
the failing side shaded) and to no change (grey). Drawn from the part's checks as stored in
results.json (value, interval, threshold, passed): nothing is recomputed here.
"""
from __future__ import annotations

import math
from typing import Any

from accelgate.metrics.catalog import DISTRIBUTION as METRICS
from accelgate.report.sections import FigureSpec

PASS, FAIL, MARGIN, NEUTRAL = "#2e7d32", "#c62828", "#c62828", "#9e9e9e"


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _points(cases: list[dict], metric: str) -> list[dict]:
    """One row per candidate backend with a finite gated value of `metric`."""
    rows = []
    for case in cases:
        check = case.get("metrics", {}).get(metric)
        value = _finite(check.get("value")) if check else None
        if value is None or check.get("threshold") is None:
            continue
        ci = [_finite(v) for v in check.get("ci") or []]
        rows.append({"backend": case["backend"], "value": value, "passed": bool(check.get("passed")),
                     "threshold": float(check["threshold"]), "higher": check.get("op") == ">=",
                     "ci": ci if len(ci) == 2 and None not in ci else None})
    return rows


def _draw(fig, metrics: list[tuple[str, list[dict]]]) -> None:
    from matplotlib.ticker import MaxNLocator

    columns = min(4, len(metrics))
    axes = fig.subplots(math.ceil(len(metrics) / columns), columns, squeeze=False).ravel()
    for ax, (name, rows) in zip(axes, metrics):
        ys = list(range(len(rows)))[::-1]
        xs = [r["value"] for r in rows] + [r["threshold"] for r in rows] + [0.0]
        xs += [v for r in rows if r["ci"] for v in r["ci"]]
        low, high = min(xs), max(xs)
        pad = (high - low) * 0.15 or abs(high) * 0.15 or 1e-6
        low, high = low - pad, high + pad
        threshold, higher = rows[0]["threshold"], rows[0]["higher"]
        ax.axvspan(low if higher else threshold, threshold if higher else high, color=MARGIN, alpha=0.08, lw=0)
        ax.axvline(threshold, color=MARGIN, ls="--", lw=1)
        ax.axvline(0.0, color=NEUTRAL, lw=1)
        for y, row in zip(ys, rows):
            colour = PASS if row["passed"] else FAIL
            if row["ci"]:
                ax.hlines(y, row["ci"][0], row["ci"][1], color=colour, lw=2)
            ax.plot(row["value"], y, "o", color=colour, ms=6)
        ax.set_xlim(low, high)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 4), useMathText=True)
        ax.set_yticks(ys, [r["backend"] for r in rows])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        metric = METRICS.get(name)
        ax.set_title(f"{metric.label if metric else name} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)


def forest_plots(part: dict[str, Any], results: dict[str, Any], run_titles: dict[str, str] | None = None
                 ) -> list[FigureSpec]:
    """One forest plot per (run, model, resolution) whose candidates have a gated delta."""
    groups: dict[tuple, list[dict]] = {}
    for case in part.get("cases", []):
        if not case.get("reference") and case.get("metrics"):
            groups.setdefault((case["run"], case["model"], tuple(case["resolution"])), []).append(case)
    reference = part.get("reference") or results.get("reference") or "eager"
    specs = []
    for (run, model, (width, height)), cases in groups.items():
        names = [n for n in dict.fromkeys(m for c in cases for m in c["metrics"]) if _points(cases, n)]
        if not names:
            continue
        metrics = [(name, _points(cases, name)) for name in names]
        rows = math.ceil(len(names) / min(4, len(names)))
        backends = max(len(points) for _, points in metrics)
        random = any(c.get("random_weights") for c in cases)
        caption = (f"Each backend's gated delta vs {reference} (dot), its 95% interval over prompts (bar), the "
                   "margin it must stay within (dashed red; the shaded side fails) and no change (grey). Green "
                   "passed, red failed." + (" Random-weight metric models: the values exercise the gate and carry "
                                            "no quality meaning." if random else ""))
        specs.append(FigureSpec(
            name=f"forest-{run}-{model}-{width}x{height}",
            title=f"{model} @ {width}x{height} ({(run_titles or {}).get(run, run)}): delta vs {reference}",
            caption=caption, draw=lambda fig, metrics=metrics: _draw(fig, metrics),
            size=(3.0 * min(4, len(names)), rows * (0.45 * backends + 1.3))))
    return specs
