"""The speed gate's plots: it/s and E2E per backend against the reference, cold vs warm-cache
warmup, and the per-step time of every case that recorded it.

Drawn from the speed part as stored in results.json: the seed-004 table's columns (values and
their change in % against the reference, computed by `speed.report` when the part was
finished) and each case's `step_s` (seconds per denoising step 2..N, the median over rounds).
A value that was not measured is left out, never drawn as 0.
"""
from __future__ import annotations

from typing import Any

from accelgate.report.sections import FigureSpec

REFERENCE, OTHER, COLD, WARM = "#9e9e9e", "#1565c0", "#ef6c00", "#2e7d32"


def _label(column: dict[str, Any], several_hardware: bool) -> str:
    label = f"{column['backend']}\n{column['resolution']}"
    return label + (f"\n{column['hardware']}" if several_hardware else "")


def _bars(ax, columns: list[dict], key: str, title: str, scale: float, several: bool) -> None:
    shown = [c for c in columns if c["values"].get(key) is not None]
    xs = range(len(shown))
    values = [c["values"][key] * scale for c in shown]
    bars = ax.bar(xs, values, color=[REFERENCE if c["reference"] else OTHER for c in shown])
    for bar, column in zip(bars, shown):
        pct = (column.get("change_pct") or {}).get(key)
        if pct is not None:
            ax.annotate(f"{pct:+.0f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs), [_label(c, several) for c in shown], fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.margins(y=0.15)


def _warmups(ax, columns: list[dict], several: bool) -> None:
    shown = [c for c in columns if c["values"].get("cold_warmup_s") is not None]
    xs = list(range(len(shown)))
    ax.bar([x - 0.2 for x in xs], [c["values"]["cold_warmup_s"] for c in shown], width=0.4, color=COLD,
           label="cold (compile)")
    warm = [(x, c["values"]["warm_warmup_s"]) for x, c in zip(xs, shown) if c["values"].get("warm_warmup_s") is not None]
    ax.bar([x + 0.2 for x, _ in warm], [v for _, v in warm], width=0.4, color=WARM, label="warm cache")
    ax.set_xticks(xs, [_label(c, several) for c in shown], fontsize=7)
    ax.set_title("first call (s): cold vs warm cache", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(fontsize=7)


def _speed_figure(fig, columns: list[dict], several: bool) -> None:
    axes = fig.subplots(1, 3)
    _bars(axes[0], columns, "it_per_s", "iteration speed (it/s, higher is better)", 1.0, several)
    _bars(axes[1], columns, "e2e_s", "E2E time (s, lower is better)", 1.0, several)
    _warmups(axes[2], columns, several)


def _steps_figure(fig, cases: list[dict]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax = fig.subplots()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for case in cases:
        steps = case["step_s"]
        ax.plot(range(2, len(steps) + 2), [s * 1000 for s in steps], marker="o", ms=3, label=case["backend"])
    ax.set_xlabel("denoising step", fontsize=8)
    ax.set_ylabel("ms per step", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7)


def speed_plots(part: dict[str, Any], results: dict[str, Any]) -> list[FigureSpec]:
    """Per model: it/s, E2E and warmups per backend and resolution; per model and resolution:
    the per-step curve of every backend that recorded one."""
    reference = part.get("reference") or "eager"
    several = len({c["hardware"] for m in part.get("models", []) for c in m["columns"]}) > 1
    specs = []
    for model in part.get("models", []):
        columns = model["columns"]
        if not any(c["values"].get("it_per_s") is not None for c in columns):
            continue
        specs.append(FigureSpec(
            name=f"speed-{model['model']}", title=f"{model['model']}: speed against {reference}",
            caption=f"Grey: {reference}; blue: the other backends, each with its change against {reference} at the "
                    "same resolution and hardware. Warmups: the first call with an empty compile cache and with a "
                    "warm one (equal for a backend that compiles nothing).",
            draw=lambda fig, columns=columns: _speed_figure(fig, columns, several),
            size=(max(9.0, 1.1 * len(columns) * 3), 3.6)))
    curves: dict[tuple[str, str], list[dict]] = {}
    for case in part.get("cases", []):
        if case.get("step_s"):
            curves.setdefault((case["model"], case["resolution"]), []).append(case)
    for (model, resolution), cases in sorted(curves.items()):
        specs.append(FigureSpec(
            name=f"steps-{model}-{resolution}", title=f"{model} @ {resolution}: time per denoising step",
            caption="Milliseconds per step (steps 2..N, the median over the timed rounds): a cache that skips work "
                    "shows as a saw-tooth, a recompile or a fallback as a jump.",
            draw=lambda fig, cases=cases: _steps_figure(fig, cases), size=(7.0, 3.2)))
    return specs
