"""The schema of `[tool.accelgate.distribution]` and the table of distribution metrics.

Checked when the config is read, before anything loads: a misspelt tolerance is a
`ConfigError` naming the file, the table, the key and the allowed keys, because a tolerance
that is silently ignored is a gate that silently passes. Model and backend names are checked
against the matrix by `check_names` once the matrix is known.

    [tool.accelgate.distribution]
    metric_models = "real"            # "random": offline random-weight metric models (CPU dry runs)
    prompt_limit = 200                # prompts per set (--prompt-limit overrides)
    hps_version = "v2.1"              # v2.0 and v2.1 scores are not comparable
    prompt_sets = { sd15 = "hpdv2", kolors = "coco30k:/data/coco30k" }   # else the model's own set
    real_images = { dit-xl-2-256 = "/data/imagenet-val", tiny-dit = "skimage" }  # FID/KID vs real
                                      # images: a folder, or "skimage" (the photographs it ships)
    weights = { aesthetic = "/w/sac+logos+ava1-l14-linearMSE.pth" }      # else the offline caches
    tolerances = { hps = 0.5, fid = 2.0 }                                # in the metric's units
    random_tolerances = { lpips = 0.005 }          # for random-weight metric models (own scales)
    [[tool.accelgate.distribution.loosen]]
    backend = "deepcache"
    hps = 2.0
    reason = "DeepCache reuses deep UNet features: seed 001 measured -1.47 HPS with OneDiff DeepCache"
    [tool.accelgate.distribution.cpu_run]   # the small CPU run of every metric (random weights)
    models = ["tiny-sd", "tiny-pix2pix", "tiny-dit"]
    backends = ["eager", "channels-last", "bf16", "deepcache"]
    prompt_limit = 4
"""
from __future__ import annotations

from typing import Any

from accelgate.config.schema import ConfigError, check_keys, most_specific, parse_loosening
from accelgate.metrics.catalog import DISTRIBUTION as METRICS
from accelgate.metrics.catalog import HPS_VERSIONS, LPIPS_NETS


def metrics_for(task: str, chosen: list[str] | None, has_real: bool) -> list[str]:
    """The metrics a case computes: those of its task, narrowed by the config; *_real only with a real set."""
    names = [m.name for m in METRICS.values() if task in m.tasks and (chosen is None or m.name in chosen)]
    return [n for n in names if has_real or not n.endswith("_real")]


# ------------------------------------------------------------------------------- config
DEFAULTS: dict[str, Any] = {
    "metric_models": "real", "models": None, "backends": None, "prompt_limit": None, "prompt_sets": {},
    "metrics": None, "weights": {}, "hps_version": "v2.1", "lpips_net": "alex", "real_images": {},
    "real_images_limit": None, "confidence": 0.95, "bootstrap_resamples": 9999, "is_splits": 10,
    "kid_subset_size": None, "batch_size": 32, "tolerances": {}, "random_tolerances": {}, "loosen": [],
    "cpu_run": {"models": [], "backends": [], "prompt_limit": 4},
}
_KEYS = {
    "metric_models": str, "models": list, "backends": list, "prompt_limit": int, "prompt_sets": dict,
    "metrics": list, "weights": dict, "hps_version": str, "lpips_net": str, "real_images": dict,
    "real_images_limit": int, "confidence": float, "bootstrap_resamples": int, "is_splits": int,
    "kid_subset_size": int, "batch_size": int, "tolerances": dict, "random_tolerances": dict, "loosen": list,
    "cpu_run": dict,
}
_WEIGHT_KEYS = ("clip", "aesthetic", "hps", "inception", "lpips")


def validate_distribution_table(table: dict, where: str) -> dict:
    """`[tool.accelgate.distribution]` -> a complete settings dict (defaults filled), or ConfigError.

    Model and backend names are checked against the matrix later (`check_names`): this table
    may be read before the matrix is known.
    """
    check_keys(table, _KEYS, where)
    out = {**DEFAULTS, **{k: v for k, v in table.items() if k not in ("cpu_run", "prompt_sets")}}
    choices = {"metric_models": ("real", "random"), "hps_version": tuple(HPS_VERSIONS), "lpips_net": LPIPS_NETS}
    for key, allowed in choices.items():
        if out[key] not in allowed:
            raise ConfigError(f"{where}: {key} = {out[key]!r}; allowed: {', '.join(allowed)}")
    for key in ("prompt_limit", "real_images_limit", "bootstrap_resamples", "is_splits", "kid_subset_size",
                "batch_size"):
        if out[key] is not None and out[key] < (2 if key == "kid_subset_size" else 1):
            raise ConfigError(f"{where}: {key} must be >= {2 if key == 'kid_subset_size' else 1}, got {out[key]}")
    if not 0 < out["confidence"] < 1:
        raise ConfigError(f"{where}: confidence must be in (0, 1), e.g. 0.95; got {out['confidence']}")
    for key in ("models", "backends", "metrics"):
        if out[key] is not None and (not out[key] or not all(isinstance(v, str) for v in out[key])):
            raise ConfigError(f"{where}: {key} must be a non-empty list of names, got {out[key]!r}")
    unknown = [m for m in out["metrics"] or () if m not in METRICS]
    if unknown:
        raise ConfigError(f"{where}: metrics: unknown {unknown}; allowed: {', '.join(METRICS)}")
    check_keys(out["weights"], dict.fromkeys(_WEIGHT_KEYS, str), f"{where}.weights")
    check_keys(out["real_images"], {k: str for k in out["real_images"]}, f"{where}.real_images")
    for key, attribute in (("tolerances", "tolerance"), ("random_tolerances", "random_tolerance")):
        given = table.get(key, {})
        check_keys(given, {m: (int, float) for m in METRICS}, f"{where}.{key}")
        negative = {k: v for k, v in given.items() if v < 0}
        if negative:
            raise ConfigError(f"{where}.{key}: tolerances are sizes (>= 0) in the metric's units, got {negative}")
        out[key] = {**{m.name: getattr(m, attribute) for m in METRICS.values()},
                    **{k: float(v) for k, v in given.items()}}
    out["prompt_sets"] = {model: parse_prompt_set(spec, f"{where}.prompt_sets.{model}")
                          for model, spec in table.get("prompt_sets", {}).items()}
    out["loosen"] = [parse_loosening(entry, METRICS, f"{where}.loosen #{i + 1}", "distribution.loosen")
                     for i, entry in enumerate(out["loosen"])]
    cpu = table.get("cpu_run", {})
    check_keys(cpu, {"models": list, "backends": list, "prompt_limit": int}, f"{where}.cpu_run")
    out["cpu_run"] = {**DEFAULTS["cpu_run"], **cpu}
    if out["cpu_run"]["prompt_limit"] < 1:
        raise ConfigError(f"{where}.cpu_run: prompt_limit must be >= 1, got {out['cpu_run']['prompt_limit']}")
    return out


def parse_prompt_set(spec: str, where: str) -> dict:
    """'diffusers-guide' (embedded), 'hpdv2' (HF cache) or 'coco30k:/data/coco' (file set at a path)."""
    from accelgate.prompts.files import LOADERS
    from accelgate.prompts.sets import PROMPT_SETS

    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{where}: a prompt set is a string, e.g. 'hpdv2' or 'coco30k:/data/coco30k'; got {spec!r}")
    name, _, source = spec.strip().partition(":")
    if name in PROMPT_SETS and not source:
        return {"name": name, "source": None}
    if name in LOADERS:
        return {"name": name, "source": source or None}
    raise ConfigError(f"{where}: unknown prompt set {name!r}; embedded sets: {', '.join(sorted(PROMPT_SETS))}; "
                      f"file sets (optionally 'NAME:/path'): {', '.join(LOADERS)}")


def check_names(settings: dict, model_ids: list[str], backend_names: list[str], where: str) -> None:
    """Every model/backend the distribution table names must be in the matrix's config."""
    named = [("models", settings["models"] or [], model_ids), ("backends", settings["backends"] or [], backend_names),
             ("cpu_run.models", settings["cpu_run"]["models"], model_ids),
             ("cpu_run.backends", settings["cpu_run"]["backends"], backend_names),
             ("prompt_sets", list(settings["prompt_sets"]), model_ids),
             ("real_images", list(settings["real_images"]), model_ids)]
    named += [(f"loosen #{i + 1}", [e.backend], backend_names) for i, e in enumerate(settings["loosen"])]
    named += [(f"loosen #{i + 1}", [e.model], model_ids) for i, e in enumerate(settings["loosen"]) if e.model]
    for key, names, allowed in named:
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise ConfigError(f"{where}: {key}: {', '.join(map(repr, unknown))} not in the matrix; "
                              f"known: {', '.join(allowed)}")


def tolerance_for(settings: dict, metric: str, model: str, backend: str,
                  random_weights: bool = False) -> tuple[float | None, str]:
    """Most specific wins: (model, backend) loosening, then backend, then the table's tolerance.

    Random-weight metric models have scales of their own: they use `random_tolerances` only
    (loosenings are written in real units and do not apply).
    """
    if random_weights:
        return settings["random_tolerances"].get(metric), ""
    found = most_specific(settings["loosen"], model, backend, lambda rule: rule.thresholds.get(metric))
    if found is not None:
        return found[0], found[1].reason
    return settings["tolerances"].get(metric), ""
