"""What changed between two reports: the nightly job's post.

`python -m accelgate.report --compare OLD NEW` reads two results.json and lists, as markdown:
the cases whose verdict flipped, the metrics that moved by more than their floor, the speed
numbers that changed by more than a relative tolerance (10% by default), and the cases only
one of the runs has. A run compared with itself prints that nothing changed.

A metric's **floor** is the smallest move worth a line: for the per-image metrics the
catalog's `compare_floor` (SSIM 0.001, PSNR 0.5 dB, max abs 2 levels, colour shift 0.25
levels: below them, kernel order and hardware noise), for a distribution check a tenth of the
tolerance it is gated with (which already says what a meaningful delta is for its metric
models, real or random-weight), and for a value reported without a threshold any change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from accelgate.metrics.catalog import CATALOG
from accelgate.report.markdown import OUTCOME_MARK, table
from accelgate.report.overview import gate_parts
from accelgate.verdict import fmt_value

FLOORS = {m.name: m.compare_floor for m in CATALOG if m.compare_floor is not None}
SPEED_KEYS = {"it_per_s": "it/s", "e2e_s": "E2E (s)", "peak_mem_bytes": "peak memory (bytes)",
              "cold_warmup_s": "cold warmup (s)", "warm_warmup_s": "warm warmup (s)"}
RELATIVE_FLOOR = 0.1  # of a distribution check's tolerance
COMPARED_RUN_FIELDS = ("device_class", "config_sha256", "versions")


@dataclass
class Comparison:
    flipped: list[dict[str, Any]] = field(default_factory=list)
    moved: list[dict[str, Any]] = field(default_factory=list)
    speed: list[dict[str, Any]] = field(default_factory=list)
    only_old: list[dict[str, Any]] = field(default_factory=list)
    only_new: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.flipped or self.moved or self.speed or self.only_old or self.only_new)


def _cases(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(gate, case label) -> case; the distribution gate's runs share ids, so its label names the run."""
    found = {}
    for gate, part in gate_parts(results):
        for case in part["cases"]:
            label = case["id"] + (f" ({case['run']})" if case.get("run") else "")
            found[(gate, label)] = case
    return found


def _outcome(case: dict[str, Any]) -> str:
    return case.get("outcome") or case.get("verdict") or "?"


def _number(value: Any) -> float | None:
    """A stored metric value as a float ('inf' and '-inf' included; 'nan' and missing: None)."""
    if isinstance(value, str):
        value = {"inf": math.inf, "-inf": -math.inf}.get(value)
    return None if value is None or isinstance(value, bool) or math.isnan(value) else float(value)


def _floor(name: str, check: dict[str, Any], gate: str) -> float:
    if gate == "quality" and name in FLOORS:
        return FLOORS[name]
    threshold = _number(check.get("threshold"))
    return abs(threshold) * RELATIVE_FLOOR if threshold is not None and math.isfinite(threshold) else 0.0


def _moved(old: float | None, new: float | None, floor: float) -> bool:
    if old is None or new is None:
        return (old is None) != (new is None)
    if math.isinf(old) or math.isinf(new):
        return old != new
    return abs(new - old) > floor


def compare(old: dict[str, Any], new: dict[str, Any], speed_tolerance: float = 0.1) -> Comparison:
    """What changed from the `old` results to the `new` ones."""
    result = Comparison()
    for name in COMPARED_RUN_FIELDS:
        before, after = (old.get("run") or {}).get(name), (new.get("run") or {}).get(name)
        if before != after:
            result.notes.append(f"the runs differ in {name} ({before!r} -> {after!r}): some changes may come from "
                                "there, not from the backends")
    before, after = _cases(old), _cases(new)
    for key in before.keys() - after.keys():
        result.only_old.append({"gate": key[0], "case": key[1], "outcome": _outcome(before[key])})
    for key in after.keys() - before.keys():
        result.only_new.append({"gate": key[0], "case": key[1], "outcome": _outcome(after[key])})
    for key in [k for k in after if k in before]:
        gate, label = key
        was, now = before[key], after[key]
        if _outcome(was) != _outcome(now):
            result.flipped.append({"gate": gate, "case": label, "old": _outcome(was), "new": _outcome(now),
                                   "reason": (now.get("reason") or "; ".join(now.get("problems") or [])).split("\n")[0]})
        for name, check in (now.get("metrics") or {}).items():
            previous = (was.get("metrics") or {}).get(name)
            if previous is None:
                continue
            a, b, floor = _number(previous.get("value")), _number(check.get("value")), _floor(name, check, gate)
            if _moved(a, b, floor):
                result.moved.append({"gate": gate, "case": label, "metric": name, "old": previous.get("value"),
                                     "new": check.get("value"), "floor": floor})
        if gate == "speed":
            for name, title in SPEED_KEYS.items():
                a, b = _number(was.get(name)), _number(now.get(name))
                if a and b is not None and abs(b / a - 1) > speed_tolerance:
                    result.speed.append({"case": label, "what": title, "old": a, "new": b, "pct": (b / a - 1) * 100})
    for items in (result.flipped, result.moved, result.speed, result.only_old, result.only_new):
        items.sort(key=lambda item: (item.get("gate", ""), item["case"]))
    return result


def _value(value: Any) -> str:
    return value if isinstance(value, str) else fmt_value(value)


def _describe(results: dict[str, Any], where: str) -> str:
    run = results.get("run") or {}
    count = sum(len(part["cases"]) for _, part in gate_parts(results))
    return f"`{where}` (run `{run.get('id')}`, {count} case(s), {results.get('device_class')})"


def comparison_markdown(result: Comparison, old: dict[str, Any], new: dict[str, Any], old_name: str,
                        new_name: str, speed_tolerance: float = 0.1) -> str:
    lines = ["# accelgate: what changed", "", f"From {_describe(old, old_name)} to {_describe(new, new_name)}."]
    lines += [f"> Note: {note}" for note in result.notes]
    if not result.changed:
        lines += ["", "No change: every verdict is the same, no metric moved beyond its floor, no speed number "
                  f"changed by more than {speed_tolerance:.0%}, and both runs have the same cases."]
        return "\n".join(lines) + "\n"
    mark = lambda outcome: OUTCOME_MARK.get(outcome, outcome)  # noqa: E731
    if result.flipped:
        lines += ["", f"## Verdicts that flipped ({len(result.flipped)})", "",
                  table(["Case", "Gate", "Before", "Now", "Reason now"],
                        [[f"`{f['case']}`", f["gate"], mark(f["old"]), mark(f["new"]), f["reason"] or "-"]
                         for f in result.flipped])]
    if result.moved:
        lines += ["", f"## Metrics that moved beyond their floor ({len(result.moved)})", "",
                  table(["Case", "Gate", "Metric", "Before", "Now", "Floor"],
                        [[f"`{m['case']}`", m["gate"], m["metric"], _value(m["old"]), _value(m["new"]),
                          fmt_value(m["floor"])] for m in result.moved])]
    if result.speed:
        lines += ["", f"## Speed: changes beyond {speed_tolerance:.0%} ({len(result.speed)})", "",
                  table(["Case", "Measure", "Before", "Now", "Change"],
                        [[f"`{s['case']}`", s["what"], fmt_value(s["old"]), fmt_value(s["new"]), f"{s['pct']:+.1f}%"]
                         for s in result.speed])]
    for title, items in (("Cases only in the old run", result.only_old), ("Cases only in the new run", result.only_new)):
        if items:
            lines += ["", f"## {title} ({len(items)})", "",
                      "\n".join(f"- `{i['case']}` ({i['gate']}): {mark(i['outcome'])}" for i in items)]
    return "\n".join(lines) + "\n"
