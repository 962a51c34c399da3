"""The speed gate's section of the config: `[tool.accelgate.speed]`.

    [tool.accelgate.speed]
    rounds = 3                # timed rounds per case (pytest-benchmark's pedantic)
    warmup_rounds = 1
    speedup_on_cpu = false    # min_speedup floors on CPU (shared-machine timings have 3-4x outliers)
    floors = [{ backend = "onediff-nexfort", model = "sd21", min_speedup = 1.3, reason = "seed 004" }]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from accelgate.config.schema import ConfigError, check_keys, most_specific

SPEED_KEYS = {"rounds": int, "warmup_rounds": int, "speedup_on_cpu": bool, "floors": list}
FLOOR_KEYS = {"backend": str, "model": str, "min_speedup": (int, float), "reason": str}
DEFAULTS = {"rounds": 3, "warmup_rounds": 1, "speedup_on_cpu": False, "floors": ()}


@dataclass(frozen=True)
class Floor:
    """`min_speedup` for a backend, on one model or (model None) on all of them."""

    backend: str
    model: str | None
    min_speedup: float
    reason: str = ""


def validate_speed_table(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check `[tool.accelgate.speed]` and fill in the defaults.

    rounds (>= 1, default 3) and warmup_rounds (>= 0, default 1) go to
    `benchmark.pedantic`; speedup_on_cpu (default false) turns min_speedup floors on for
    CPU runs, where shared-machine timings have 3-4x outliers; floors = [{backend, model?,
    min_speedup, reason?}] sets per-(model, backend) floors (more specific than a backend's
    own min_speedup). Names are checked against the matrix by `check_floor_names`.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table with keys {', '.join(sorted(SPEED_KEYS))}")
    check_keys(table, SPEED_KEYS, where)
    settings = {**DEFAULTS, **{k: v for k, v in table.items() if k != "floors"}}
    if settings["rounds"] < 1:
        raise ConfigError(f"{where}: rounds must be >= 1 (pytest-benchmark needs one timed round), got {settings['rounds']}")
    if settings["warmup_rounds"] < 0:
        raise ConfigError(f"{where}: warmup_rounds must be >= 0, got {settings['warmup_rounds']}")
    floors, seen = [], set()
    for index, entry in enumerate(table.get("floors", [])):
        entry_where = f"{where}, floors entry #{index + 1}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{entry_where}: each floor must be a table like "
                              '{backend = "torch-compile", model = "sdxl-realvis", min_speedup = 1.3}')
        check_keys(entry, FLOOR_KEYS, entry_where)
        missing = [k for k in ("backend", "min_speedup") if k not in entry]
        if missing:
            raise ConfigError(f"{entry_where}: missing {', '.join(missing)}; a floor needs backend and min_speedup "
                              f"(model and reason are optional); allowed keys: {', '.join(sorted(FLOOR_KEYS))}")
        if entry["min_speedup"] <= 0:
            raise ConfigError(f"{entry_where}: min_speedup must be > 0 (times faster than the reference; "
                              f"0.9 allows 10% slower), got {entry['min_speedup']}")
        key = (entry["backend"], entry.get("model"))
        if key in seen:
            raise ConfigError(f"{entry_where}: a second floor for backend {key[0]!r}"
                              + (f" on model {key[1]!r}" if key[1] else "") + "; keep one")
        seen.add(key)
        floors.append(Floor(entry["backend"], entry.get("model"), float(entry["min_speedup"]), entry.get("reason", "")))
    settings["floors"] = tuple(floors)
    return settings


def check_floor_names(settings: Mapping[str, Any], model_ids: list[str], backend_names: list[str]) -> None:
    """A floor naming a backend or model that is not in the matrix would silently never
    apply: refuse it, listing what is there."""
    for floor in settings.get("floors", ()):
        if floor.backend not in backend_names:
            raise ConfigError(f"[speed] floors: backend {floor.backend!r} is not in the matrix; backends: "
                              f"{', '.join(backend_names)}")
        if floor.model is not None and floor.model not in model_ids:
            raise ConfigError(f"[speed] floors: model {floor.model!r} is not in the matrix; models: {', '.join(model_ids)}")


def floor_for(floors, backend_min_speedup: float | None, model: str, backend: str) -> tuple[float | None, str]:
    """Most specific wins: a (model, backend) floor, a backend floor, the backend table's own
    `min_speedup`. Returns (floor or None, where it came from)."""
    found = most_specific(floors, model, backend, lambda floor: floor.min_speedup)
    if found is not None:
        value, floor = found
        return value, floor.reason or ("[speed] floors" + (f" for {floor.model}" if floor.model else ""))
    if backend_min_speedup is not None:
        return float(backend_min_speedup), f"[backend.{backend}] min_speedup"
    return None, ""
