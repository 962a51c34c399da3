"""The per-image gate's section of the config: `[tolerances]` and `[[loosen]]`.

    [tool.accelgate.tolerances]       # the strict defaults, one per per-image metric
    ssim = 0.995
    [[tool.accelgate.loosen]]         # per backend, or per (model, backend), with a reason
    backend = "deepcache"
    model = "tiny-sd"
    ssim = 0.6
    reason = "DeepCache reuses deep UNet features across steps: lossy by design"

A loosening without a one-line reason is refused: a threshold relaxed without saying why is
how a gate ends up hiding the failure it was loosened around.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from accelgate.config.checks import check_tolerances
from accelgate.config.schema import ConfigError, Loosening, check_keys, most_specific, parse_loosening, where
from accelgate.metrics.catalog import PER_IMAGE
from accelgate.registry import frozen_mapping

DEFAULT_TOLERANCES: dict[str, float] = {name: m.quality_tolerance for name, m in PER_IMAGE.items()}


@dataclass(frozen=True)
class Tolerance:
    metric: str
    threshold: float | None
    reason: str = ""  # set when a loosening produced this threshold


@dataclass(frozen=True)
class QualitySettings:
    tolerances: Mapping[str, float]
    loosenings: tuple[Loosening, ...]

    def tolerance(self, metric: str, model: str, backend: str) -> Tolerance:
        """Most specific wins: (model, backend) loosening, then backend, then the default."""
        found = most_specific(self.loosenings, model, backend, lambda rule: rule.thresholds.get(metric))
        if found is not None:
            return Tolerance(metric, found[0], found[1].reason)
        return Tolerance(metric, self.tolerances.get(metric))


def parse_quality(raw: Mapping[str, Any], source, model_ids: list[str], backend_names: list[str]) -> QualitySettings:
    """`[tolerances]` and `[[loosen]]` of a raw config, checked against the matrix's names."""
    tolerances = dict(DEFAULT_TOLERANCES)
    table = raw.get("tolerances", {})
    check_keys(table, {m: (int, float) for m in PER_IMAGE}, where(source, "tolerances"))
    tolerances.update({k: float(v) for k, v in table.items()})
    check_tolerances({k: tolerances[k] for k in table}, where(source, "tolerances"))
    loosenings = []
    for index, entry in enumerate(raw.get("loosen", [])):
        entry_where = where(source, f"[loosen]] #{index + 1}")
        loosening = parse_loosening(entry, PER_IMAGE, entry_where)
        check_tolerances(loosening.thresholds, entry_where)
        if loosening.backend not in backend_names:
            raise ConfigError(f"{entry_where}: backend {loosening.backend!r} is not in the matrix: {', '.join(backend_names)}")
        if loosening.model is not None and loosening.model not in model_ids:
            raise ConfigError(f"{entry_where}: model {loosening.model!r} is not in the matrix: {', '.join(model_ids)}")
        loosenings.append(loosening)
    return QualitySettings(frozen_mapping(tolerances), tuple(loosenings))
