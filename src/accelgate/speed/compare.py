"""Speed regressions beyond the timed rounds: it/s, E2E, peak memory and warmups against the
saved run pytest-benchmark compares with.

pytest-benchmark's `--benchmark-compare-fail` judges its own timed rounds only; a backend that
keeps allocating memory, or whose cold compile doubled, passes it. `--accelgate-compare-fail`
takes a list like `peak_mem:10%,cold_warmup:25%` and fails a case whose value moved the wrong
way by more than that percentage against the same case (model, backend, resolution) of the
saved run. A change must also exceed a small absolute floor per field (below), so that noise
on tiny values (a few KiB of resident memory, milliseconds of warmup) is never a regression.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from accelgate.config.schema import ConfigError


@dataclass(frozen=True)
class Field:
    key: str  # the extra_info key
    higher_is_better: bool
    floor: float  # the smallest absolute change that can count as a regression
    unit: str


MiB = 2**20
FIELDS: dict[str, Field] = {
    "it_per_s": Field("it_per_s", True, 0.0, "it/s"),
    "e2e": Field("e2e_s", False, 0.005, "s"),
    "peak_mem": Field("peak_mem_bytes", False, 4 * MiB, "bytes"),  # above what was resident at the call
    "peak_mem_abs": Field("peak_mem_abs_bytes", False, 16 * MiB, "bytes"),  # weights included
    "cold_warmup": Field("cold_warmup_s", False, 0.05, "s"),
    "warm_warmup": Field("warm_warmup_s", False, 0.05, "s"),
}


def parse_compare_fail(text: str) -> dict[str, float]:
    """'peak_mem:10%,cold_warmup:25%' -> {'peak_mem': 10.0, 'cold_warmup': 25.0}."""
    limits: dict[str, float] = {}
    for entry in (e.strip() for e in str(text).split(",")):
        if not entry:
            continue
        name, sep, value = entry.partition(":")
        if name not in FIELDS:
            raise ConfigError(f"--accelgate-compare-fail: unknown field {name!r}; fields: {', '.join(FIELDS)}")
        if not sep or not value.endswith("%"):
            raise ConfigError(f"--accelgate-compare-fail: {entry!r} must be FIELD:N% (e.g. peak_mem:10%)")
        try:
            percent = float(value[:-1])
        except ValueError:
            raise ConfigError(f"--accelgate-compare-fail: {entry!r}: {value!r} is not a percentage") from None
        if not percent > 0:
            raise ConfigError(f"--accelgate-compare-fail: {entry!r}: the limit must be > 0%")
        limits[name] = percent
    if not limits:
        raise ConfigError(f"--accelgate-compare-fail is empty; write e.g. peak_mem:10%,cold_warmup:25% "
                          f"(fields: {', '.join(FIELDS)})")
    return limits


def case_key(info: Mapping[str, Any]) -> str:
    return f"{info.get('model')}/{info.get('backend')}/{info.get('resolution')}"


def saved_cases(run: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """A saved pytest-benchmark run's accelgate cases, by `model/backend/resolution`."""
    found = {}
    for bench in run.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        if info.get("model") and info.get("backend"):
            found[case_key(info)] = info
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def compare_case(now: Mapping[str, Any], saved: Mapping[str, Any] | None, limits: Mapping[str, float],
                 saved_name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per compared field (saved, now, change, limit, passed) and the problems."""
    if saved is None:
        return [], []
    rows, problems = [], []
    for name, limit in limits.items():
        field = FIELDS[name]
        old, new = _number(saved.get(field.key)), _number(now.get(field.key))
        if old is None or new is None or old == 0:
            rows.append({"field": name, "saved": old, "now": new, "change_pct": None, "limit_pct": limit,
                         "passed": True, "note": "not measured in both runs"})
            continue
        change = (new / old - 1.0) * 100.0
        worse = -change if field.higher_is_better else change
        passed = worse <= limit or abs(new - old) <= field.floor
        rows.append({"field": name, "saved": old, "now": new, "change_pct": change, "limit_pct": limit,
                     "passed": passed})
        if not passed:
            direction = "dropped" if field.higher_is_better else "grew"
            problems.append(f"{name} ({field.key}) {direction} {abs(change):.1f}% against saved run {saved_name} "
                            f"({_show(old, field)} -> {_show(new, field)}), limit {limit:g}% "
                            f"(--accelgate-compare-fail)")
    return rows, problems


def _show(value: float, field: Field) -> str:
    if field.unit == "bytes":
        return f"{value / MiB:.1f} MiB"
    return f"{value:.4g} {field.unit}"
