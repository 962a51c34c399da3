"""The seed-004 speed table, built from pytest-benchmark's saved runs.

Seed 004 reports, per GPU and resolution, iteration speed, end-to-end time, max memory, and
warmup with compilation vs with a warm cache, each accelerated number followed by its change
against PyTorch ("15.93 it/s (+52.4%)"). This module rebuilds that table from what the suite
saves with `--benchmark-autosave`: `.benchmarks/<machine_id>/NNNN_*.json`, one JSON per run,
each benchmark's `extra_info` holding model, backend, resolution, it_per_s, e2e_s,
peak_mem_bytes, cold_warmup_s, warm_warmup_s and recompiles.

Layout: one table per model; one row per metric; one column per resolution x backend (x GPU
when runs from several machines are combined, like the seed's GPU columns), the reference
backend (eager) first within each resolution; every other cell carries its change in %
against the reference of the same model, resolution and hardware. A value that was not measured
is "-" in markdown and null in JSON, never 0: a zero would read as "infinitely fast" or
"no memory" and would poison the percentages.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from accelgate.machine import MACHINE_INFO_KEY, compare_machines, describe, hardware_label
from accelgate.report.sections import Section, register_section
from accelgate.speed.plots import speed_plots


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    fmt: Callable[[float], str]


def _fmt_seconds(v: float) -> str:
    return f"{v:.1f} s" if v >= 100 else f"{v:.2f} s" if v >= 1 else f"{v:.3f} s"


def _fmt_bytes(v: float) -> str:
    for unit, scale, digits in (("GiB", 2**30, 3), ("MiB", 2**20, 1), ("KiB", 2**10, 1)):
        if abs(v) >= scale:
            return f"{v / scale:.{digits}f} {unit}"
    return f"{v:.0f} B"


ROWS: tuple[Row, ...] = (
    Row("it_per_s", "Iteration speed", "it/s", lambda v: f"{v:.2f} it/s"),
    Row("e2e_s", "E2E time", "s", _fmt_seconds),
    Row("peak_mem_bytes", "Max Mem Used", "bytes", _fmt_bytes),
    Row("cold_warmup_s", "Warmup with Compilation time", "s", _fmt_seconds),
    Row("warm_warmup_s", "Warmup with Cache time", "s", _fmt_seconds),
)
# shown only when some case recorded it; a change in % of a count is not meaningful
OPTIONAL_ROWS: tuple[Row, ...] = (Row("recompiles", "Recompiles", "count", lambda v: f"{v:.0f}"),)
NO_PERCENT = {"recompiles"}


def resolution_label(value: Any) -> str | None:
    """"HxW" from "512x512", "512*512", "512", [512, 512], {"height":..,"width":..} or 512."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = (value.get("height"), value.get("width"))
    if isinstance(value, (int, float)):
        value = (value, value)
    if isinstance(value, str):
        value = [p.strip() for p in value.lower().replace("*", "x").replace("\u00d7", "x").split("x")]
        value = value * 2 if len(value) == 1 else value

    def one(part: Any) -> str:
        try:
            return str(int(float(part)))
        except (TypeError, ValueError):
            return str(part)

    return "x".join(one(p) for p in value)


def _pixels(label: str) -> int:
    try:
        h, w = (int(p) for p in label.split("x"))
        return h * w
    except ValueError:
        return 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) or math.isinf(value) else float(value)


@dataclass
class SpeedCase:
    """One benchmark of one saved run: a (model, backend, resolution) and its numbers."""

    model: str
    backend: str
    resolution: str
    values: dict[str, float | None]
    run: str = ""
    datetime: str = ""
    machine: Mapping[str, Any] = field(default_factory=dict)
    memory_api: str | None = None

    @property
    def hardware(self) -> str:
        return hardware_label(self.machine)


def find_runs(storage: str | os.PathLike, latest_only: bool = True) -> list[Path]:
    """Saved run files under a pytest-benchmark storage dir (`.benchmarks`), oldest first.

    `latest_only` keeps the newest run (by its recorded datetime), since older runs may hold
    another code version; pass False to merge several runs (see `cases_from_runs`).
    """
    root = Path(storage)
    if root.is_file():
        return [root]
    paths = sorted(p for p in root.glob("*/[0-9][0-9][0-9][0-9]_*.json") if p.is_file())
    if not paths:
        raise FileNotFoundError(
            f"no saved pytest-benchmark runs under {root} (expected <machine_id>/NNNN_*.json); "
            f"run the suite with --benchmark-autosave or --benchmark-save=NAME first")
    runs = sorted(paths, key=lambda p: (json.loads(p.read_text()).get("datetime", ""), p.name))
    return runs[-1:] if latest_only else runs


def load_run(path: str | os.PathLike) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise ValueError(f"{path} is not a pytest-benchmark saved run (no 'benchmarks' list)")
    data.setdefault("_path", str(path))
    return data


def cases_from_runs(runs: Iterable[Mapping[str, Any]]) -> list[SpeedCase]:
    """Every benchmark whose extra_info names a model and a backend, one per
    (model, backend, resolution, hardware): when runs repeat a case, the newest run wins."""
    chosen: dict[tuple[str, str, str, str], SpeedCase] = {}
    ordered = sorted(runs, key=lambda r: (r.get("datetime", ""), Path(str(r.get("_path", ""))).name))
    rows = ROWS + OPTIONAL_ROWS
    for run in ordered:
        for bench in run.get("benchmarks", []):
            extra = bench.get("extra_info") or {}
            if not extra.get("model") or not extra.get("backend"):
                continue
            res = resolution_label(extra.get("resolution")) or "-"
            case = SpeedCase(
                model=str(extra["model"]), backend=str(extra["backend"]), resolution=res,
                values={row.key: _number(extra.get(row.key)) for row in rows},
                run=Path(str(run.get("_path", ""))).name, datetime=run.get("datetime", ""),
                machine=run.get("machine_info") or {}, memory_api=extra.get("peak_mem_api"),
            )
            chosen[(case.model, case.backend, case.resolution, case.hardware)] = case
    return list(chosen.values())


def _change_pct(value: float | None, ref: float | None) -> float | None:
    if value is None or ref is None or ref == 0:
        return None
    return (value / ref - 1.0) * 100.0


@dataclass
class SpeedTable:
    """Tables per model plus the notes that qualify them; `to_markdown`, `to_dict`."""

    reference: str
    rows: tuple[Row, ...]
    models: dict[str, list[SpeedCase]]
    warnings: list[str]
    machines: list[str]
    memory_apis: list[str]

    def columns(self, model: str) -> list[SpeedCase]:
        cases = self.models[model]
        return sorted(cases, key=lambda c: (c.hardware, -_pixels(c.resolution), c.resolution,
                                            c.backend != self.reference, c.backend))

    def reference_for(self, case: SpeedCase) -> SpeedCase | None:
        """The reference of the same resolution *on the same hardware*: a change in % across
        GPUs would measure the GPU."""
        for other in self.models[case.model]:
            if (other.backend, other.resolution, other.hardware) == (self.reference, case.resolution, case.hardware):
                return other
        return None

    def header(self, case: SpeedCase) -> str:
        several = len({c.hardware for cases in self.models.values() for c in cases}) > 1
        return f"{case.backend}, {case.resolution}" + (f", {case.hardware}" if several else "")

    def change_pct(self, case: SpeedCase, key: str) -> float | None:
        if case.backend == self.reference or key in NO_PERCENT:
            return None
        ref = self.reference_for(case)
        return _change_pct(case.values.get(key), ref.values.get(key) if ref else None)

    def cell(self, case: SpeedCase, row: Row) -> str:
        value = case.values.get(row.key)
        if value is None:
            return "-"
        pct = self.change_pct(case, row.key)
        return row.fmt(value) + (f" ({pct:+.1f}%)" if pct is not None else "")

    def to_markdown(self) -> str:
        out = ["# Speed", ""]
        for warning in self.warnings:
            out += ["> **Warning:** " + warning.replace("\n", "\n> "), ""]
        out += [f"Measured on: {', '.join(self.machines) or 'unrecorded'}.",
                f"Change in % is against `{self.reference}` of the same model and resolution.",
                f"Memory: {'; '.join(self.memory_apis) or 'API not recorded'}.", ""]
        for model in sorted(self.models):
            cols = self.columns(model)
            out += [f"## {model}", "",
                    "| Metric | " + " | ".join(self.header(c) for c in cols) + " |",
                    "|---|" + "---|" * len(cols)]
            for row in self.rows:
                out.append(f"| {row.label} | " + " | ".join(self.cell(c, row) for c in cols) + " |")
            missing = [c.backend for c in cols if c.backend != self.reference and self.reference_for(c) is None]
            if missing:
                out += ["", f"No `{self.reference}` column at the same resolution and hardware: no change in % for "
                        f"{', '.join(sorted(set(missing)))}."]
            out.append("")
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "rows": [{"key": r.key, "label": r.label, "unit": r.unit} for r in self.rows],
            "machines": list(self.machines),
            "memory_apis": list(self.memory_apis),
            "warnings": list(self.warnings),
            "models": [
                {"model": model, "columns": [
                    {"backend": c.backend, "resolution": c.resolution, "hardware": c.hardware, "run": c.run,
                     "reference": c.backend == self.reference,
                     "values": {r.key: c.values.get(r.key) for r in self.rows},
                     "change_pct": {r.key: self.change_pct(c, r.key) for r in self.rows}}
                    for c in self.columns(model)]}
                for model in sorted(self.models)],
        }


def build_speed_table(
    cases: Sequence[SpeedCase],
    reference: str = "eager",
    current_machine: Mapping[str, Any] | None = None,
) -> SpeedTable:
    """Group cases per model and collect what qualifies the numbers.

    Warnings: cases from runs on different hardware (named by `compare_machines`), or a
    `current_machine` (this process's `machine_info`) that differs from where they ran.
    """
    models: dict[str, list[SpeedCase]] = {}
    for case in cases:
        models.setdefault(case.model, []).append(case)
    rows = ROWS + tuple(r for r in OPTIONAL_ROWS if any(c.values.get(r.key) is not None for c in cases))
    warnings: list[str] = []
    machines: list[str] = []
    first: Mapping[str, Any] | None = None
    for case in cases:
        label = describe(case.machine) if case.machine else "an unrecorded machine"
        if label not in machines:
            machines.append(label)
        if first is None and case.machine:
            first = case.machine
        elif case.machine and (warning := compare_machines(first, case.machine)):
            if warning not in warnings:
                warnings.append("the table mixes runs from different machines\n" + warning)
    if current_machine is not None and first is not None:
        if warning := compare_machines(first, current_machine):
            warnings.append("the saved runs come from another machine than this one\n" + warning)
    apis = sorted({c.memory_api for c in cases if c.memory_api})
    if len(apis) > 1:
        warnings.append(f"Max Mem Used was read through {len(apis)} different APIs ({'; '.join(apis)}): "
                        f"those memory numbers are not comparable with each other")
    return SpeedTable(reference, rows, models, warnings, machines, apis)


def speed_report(
    runs: str | os.PathLike | Sequence[str | os.PathLike],
    report_dir: str | os.PathLike | None = None,
    reference: str = "eager",
    current_machine: Mapping[str, Any] | None = None,
) -> SpeedTable:
    """Build the table from a storage dir (latest run) or explicit run files; when
    `report_dir` is given, write `speed.md` there. `table.to_dict()` is for results.json."""
    paths = find_runs(runs) if isinstance(runs, (str, os.PathLike)) else [Path(p) for p in runs]
    cases = cases_from_runs(load_run(p) for p in paths)
    table = build_speed_table(cases, reference, current_machine)
    if report_dir is not None:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        (Path(report_dir) / "speed.md").write_text(table.to_markdown(), encoding="utf-8")
    return table


# ------------------------------------------------------------------------------ the report's part
def table_of_part(part: Mapping[str, Any]) -> SpeedTable:
    """The table of a results.json speed part: its cases (every run merged into the report), and
    the latest saved pytest-benchmark run's cases where none of the report's is for the same case."""
    now = {"benchmarks": [{"extra_info": case} for case in part.get("cases", [])],
           "machine_info": {MACHINE_INFO_KEY: part.get("machine") or {}}, "datetime": part.get("datetime", ""),
           "_path": "this session"}
    saved = part.get("saved_run")
    runs = [saved, now] if saved else [now]
    return build_speed_table(cases_from_runs(runs), part.get("reference") or "eager", part.get("machine"))


def finish_part(part: dict[str, Any]) -> dict[str, Any]:
    """After a merge: the table's keys (rows, machines, models...) recomputed from the cases."""
    return {**part, **table_of_part(part).to_dict()}


def compare_markdown(part: Mapping[str, Any]) -> str:
    """`--accelgate-compare-fail`: each compared field of each case, the saved run and this one."""
    cases = [c for c in part.get("cases", []) if (c.get("compare") or {}).get("rows")]
    if not cases:
        return ""
    from accelgate.speed.compare import FIELDS, MiB

    def show(value, name):
        if value is None:
            return "-"
        return f"{value / MiB:.1f} MiB" if FIELDS[name].unit == "bytes" else f"{value:.4g} {FIELDS[name].unit}"

    lines = ["## Compared with the saved run (--accelgate-compare-fail)", "",
             "| Case | Field | Saved run | This run | Change | Limit | |", "|---|---|---|---|---|---|---|"]
    for case in cases:
        compare = case["compare"]
        for row in compare["rows"]:
            change = "-" if row["change_pct"] is None else f"{row['change_pct']:+.1f}%"
            lines.append(f"| {case['id']} | {row['field']} | {show(row['saved'], row['field'])} ({compare['saved_run']}) "
                         f"| {show(row['now'], row['field'])} | {change} | {row['limit_pct']:g}% | "
                         f"{'✅' if row['passed'] else '❌'} |")
    missing = [c["id"] for c in part.get("cases", []) if c.get("compare") and not c["compare"].get("in_saved_run")]
    if missing:
        lines += ["", f"Not in the saved run (not compared): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def render(part: dict[str, Any], results: dict[str, Any]) -> list[str]:
    markdown = table_of_part(part).to_markdown() + compare_markdown(part)
    demoted = "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines())
    return [demoted.replace("## Speed", "## Speed (pytest-benchmark)", 1)]


def files(part: dict[str, Any], results: dict[str, Any]) -> dict[str, str]:
    return {"speed.md": table_of_part(part).to_markdown() + compare_markdown(part)}


SECTION = register_section(Section("speed", "speed", 2, render, finish_part, files, figures=speed_plots))
