"""The matrix as data: one TOML schema, read from `[tool.accelgate]` in pyproject.toml or from a
file given with `--accelgate-config` (same keys at top level), validated into a `Config`.

Every key is checked here, before a single pipeline loads; each gate's own table is parsed by
its section module (quality.py, distribution.py, speed.py) and the names it mentions are
checked against the matrix's models and backends here, once, up front. Building a `Config`
imports no torch: the registries describe models and backends without importing what builds
or applies them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from accelgate.backends.registry import BACKENDS, BackendSpec, get_backend
from accelgate.backends.user import user_backend
from accelgate.config.checks import check_generation, check_options, check_size, check_unique
from accelgate.config.distribution import check_names, validate_distribution_table
from accelgate.config.model_keys import ALTERNATIVES, GENERATION_KEYS, MODEL_KEYS, NEW_MODEL_REQUIRED, NEW_ONLY
from accelgate.config.prompts import parse_prompts
from accelgate.config.quality import QualitySettings, Tolerance, parse_quality
from accelgate.config.schema import ConfigError, check_keys, parse_device, parse_resolution, where
from accelgate.config.speed import check_floor_names, validate_speed_table
from accelgate.models.registry import DENOISERS, DTYPES, MODELS, TASKS, ModelSpec
from accelgate.registry import frozen_mapping

TOP_KEYS = {
    "reference": str, "device": str, "baseline_dir": str, "threads": int,
    "models": list, "backends": list, "generation": dict, "model": dict,
    "backend": dict, "tolerances": dict, "loosen": list, "distribution": dict,
    "speed": dict, "case_timeout": (int, float),
}
BACKEND_KEYS = {"factory": str, "options": dict, "models": list, "description": str, "min_speedup": (int, float),
                "recompile_budget": int, "skips_work": bool, "changes_numerics": bool,
                "compiles": bool}


@dataclass(frozen=True)
class BackendChoice:
    spec: BackendSpec
    models: tuple[str, ...] | None = None  # restricts the backend to these models
    min_speedup: float | None = None
    recompile_budget: int | None = None


@dataclass(frozen=True)
class Config:
    source: Path | None
    root: Path
    reference: str
    device: str
    baseline_dir: Path
    threads: int
    models: tuple[ModelSpec, ...]
    model_paths: Mapping[str, str]
    backends: tuple[BackendChoice, ...]
    quality: QualitySettings
    distribution: Mapping[str, Any] = field(default_factory=frozen_mapping)
    speed: Mapping[str, Any] = field(default_factory=frozen_mapping)
    case_timeout: float | None = None  # seconds; None: the device class's default (accelgate.limits)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the TOML data it came from

    def tolerance(self, metric: str, model: str, backend: str) -> Tolerance:
        """The per-image threshold: most specific loosening, else the default."""
        return self.quality.tolerance(metric, model, backend)

    def backend(self, name: str) -> BackendChoice:
        for choice in self.backends:
            if choice.spec.name == name:
                return choice
        raise KeyError(name)


def _model_from_table(model_id: str, table: Mapping[str, Any], general: Mapping[str, Any], place: str,
                      base: Path) -> ModelSpec:
    settings = {**general, **{k: v for k, v in table.items() if k in GENERATION_KEYS}}
    if "dtype" in settings and settings["dtype"] not in DTYPES:
        raise ConfigError(f"{place}: dtype {settings['dtype']!r}; expected one of {', '.join(DTYPES)}")
    if "prompts" in table and "prompt_set" in table:
        raise ConfigError(f"{place}: gives both prompts and prompt_set; keep one (prompts: the model's own, "
                          "prompt_set: an embedded set by name)")
    if "prompt_set" in settings and "prompts" not in table:
        from accelgate.prompts.sets import PROMPT_SETS

        if settings["prompt_set"] not in PROMPT_SETS:
            raise ConfigError(
                f"{place}: unknown prompt_set {settings['prompt_set']!r}; known sets: {', '.join(sorted(PROMPT_SETS))}; "
                "or give the model's own prompts = [...] (an inline list or a .txt/.json file)"
            )
    if "resolutions" in table:
        if not table["resolutions"]:
            raise ConfigError(f"{place}: resolutions is empty; give at least one, e.g. ['512x512']")
        settings["resolutions"] = tuple(parse_resolution(r, f"{place} resolutions") for r in table["resolutions"])
        check_unique(list(settings["resolutions"]), "resolutions", place)
        native = MODELS[model_id].resolutions if model_id in MODELS else ()
        check_size(model_id, settings["resolutions"], native, table.get("allow_large", False), place)
    check_generation(settings, place)
    if "guidance_scale" in settings:
        settings["guidance_scale"] = float(settings["guidance_scale"])
    if model_id in MODELS:
        base_spec = MODELS[model_id]
        extra = sorted(k for k in NEW_ONLY if k in table)
        if extra:
            raise ConfigError(
                f"{place}: {', '.join(extra)} cannot be changed for catalog model {model_id!r}; "
                "declare a new model id instead"
            )
        if "call_kwargs" in table:
            settings["call_kwargs"] = frozen_mapping({**base_spec.call_kwargs, **table["call_kwargs"]})
        _own_prompts(settings, table, base_spec.task, model_id, base, place)
        if "gpu" in table:
            settings["gpu"] = table["gpu"]
        return replace(base_spec, **settings)
    given = set(table) | set(general)
    missing = [k for k in NEW_MODEL_REQUIRED if k not in given]
    missing += [" or ".join(pair) for pair in ALTERNATIVES if not given & set(pair)]
    if missing:
        raise ConfigError(
            f"{place}: {model_id!r} is not a catalog model ({', '.join(sorted(MODELS))}); to declare a new one "
            f"also give: {', '.join(missing)} (every key: the README's table of model keys)"
        )
    for key, allowed in (("task", TASKS), ("denoiser", DENOISERS)):
        if table[key] not in allowed:
            raise ConfigError(f"{place}: {key} {table[key]!r}; expected one of {', '.join(allowed)}")
    _own_prompts(settings, table, table["task"], model_id, base, place)
    return ModelSpec(
        id=model_id, task=table["task"], pipeline_class=table["pipeline_class"], denoiser=table["denoiser"],
        source="hub", repo_id=table.get("repo_id") or str(_local(table["path"], base)), variant=table.get("variant"),
        # a local directory (or a tiny test-bed model saved there) runs anywhere; a hub model is a real one
        gpu=table.get("gpu", "path" not in table), call_kwargs=frozen_mapping(table.get("call_kwargs")),
        **{k: v for k, v in settings.items() if k != "call_kwargs"},
    )


def _local(text: str, base: Path) -> Path:
    """A configured path: `~` expanded, a relative one read from the config file's directory."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _own_prompts(settings: dict, table: Mapping[str, Any], task: str, model_id: str, base: Path, place: str) -> None:
    if "prompts" in table:
        settings["prompt_set"], settings["prompts"] = parse_prompts(table["prompts"], task, model_id, base, place)


def _backend_from_table(name: str, table: Mapping[str, Any], place: str) -> BackendChoice:
    options = table.get("options", {})
    if "models" in table:
        check_unique(table["models"], "models", place)
    if "factory" in table:
        if name in BACKENDS:
            raise ConfigError(f"{place}: {name!r} is a built-in backend; give the factory backend another name")
        try:
            spec = user_backend(name, table["factory"], options)
        except (ValueError, ImportError) as error:
            raise ConfigError(f"{place}: {error}") from None
    elif name in BACKENDS:
        spec = get_backend(name).with_options(options)
    else:
        raise ConfigError(
            f"{place}: unknown backend {name!r}; built-in backends: {', '.join(sorted(BACKENDS))}; "
            'or declare a user backend with factory = "module:function"'
        )
    check_options(name, spec.apply, options, place)
    for flag in ("skips_work", "changes_numerics", "compiles"):  # what a user's own backend declares (see BackendSpec)
        if flag in table:
            spec = replace(spec, **{flag: table[flag]})
    models = tuple(table["models"]) if "models" in table else None
    return BackendChoice(spec, models, table.get("min_speedup"), table.get("recompile_budget"))


def build_config(raw: Mapping[str, Any], source: Path | None, root: Path) -> Config:
    """Validate the raw TOML mapping and resolve it against the registries."""
    import accelgate.backends  # noqa: F401  (registers built-in backends)
    import accelgate.models.catalog  # noqa: F401  (registers catalog models)

    top = where(source, "tool.accelgate" if source and source.name == "pyproject.toml" else "")
    check_keys(raw, TOP_KEYS, top)
    general = raw.get("generation", {})
    check_keys(general, GENERATION_KEYS, where(source, "generation"))
    check_generation(general, where(source, "generation"))
    for key in ("models", "backends"):
        if key in raw:
            check_unique(raw[key], key, top)

    model_tables = raw.get("model", {})
    model_ids = list(raw.get("models", sorted(k for k, m in MODELS.items() if m.source == "tiny")))
    for model_id in model_tables:
        if model_id not in model_ids:
            model_ids.append(model_id)
    base = source.parent if source else root
    models, paths = [], {}
    for model_id in model_ids:
        table = model_tables.get(model_id, {})
        table_where = where(source, f"model.{model_id}")
        check_keys(table, MODEL_KEYS, table_where)
        if not isinstance(model_id, str):
            raise ConfigError(f"{top}: models must be a list of model ids, got {model_id!r}")
        if model_id not in MODELS and not table:
            raise ConfigError(
                f"{top}: unknown model {model_id!r}; catalog models: {', '.join(sorted(MODELS))}; "
                f"or declare it under [model.{model_id}]"
            )
        models.append(_model_from_table(model_id, table, general, table_where, base))
        if "path" in table:
            paths[model_id] = str(_local(table["path"], base))

    backend_tables = raw.get("backend", {})
    backend_names = list(raw.get("backends", ["eager"]))
    for name in backend_tables:
        if name not in backend_names:
            backend_names.append(name)
    backends = []
    for name in backend_names:
        table = backend_tables.get(name, {})
        table_where = where(source, f"backend.{name}")
        check_keys(table, BACKEND_KEYS, table_where)
        choice = _backend_from_table(name, table, table_where)
        unknown = [m for m in (choice.models or ()) if m not in model_ids]
        if unknown:
            raise ConfigError(f"{table_where}: models {unknown} are not in the matrix; known: {', '.join(model_ids)}")
        backends.append(choice)

    reference = raw.get("reference", "eager")
    if reference not in backend_names:
        raise ConfigError(f"{top}: reference backend {reference!r} is not among the backends: {', '.join(backend_names)}")
    threads = raw.get("threads", 1)
    if threads < 1:
        raise ConfigError(f"{top}: threads must be >= 1, got {threads}")
    case_timeout = raw.get("case_timeout")
    if case_timeout is not None and not case_timeout > 0:
        raise ConfigError(f"{top}: case_timeout must be > 0 seconds (leave it out for the device's default), "
                          f"got {case_timeout}")

    distribution_where = where(source, "tool.accelgate.distribution" if source and source.name == "pyproject.toml"
                               else "distribution")
    distribution = validate_distribution_table(raw.get("distribution", {}), where(source, "distribution"))
    check_names(distribution, model_ids, backend_names, distribution_where)
    speed = validate_speed_table(raw.get("speed", {}), where(source, "speed"))
    check_floor_names(speed, model_ids, backend_names)

    baseline_dir = Path(raw.get("baseline_dir", "baselines"))
    return Config(
        source=source, root=root, reference=reference, device=parse_device(raw.get("device", "auto")),
        baseline_dir=baseline_dir if baseline_dir.is_absolute() else base / baseline_dir, threads=threads,
        models=tuple(models), model_paths=frozen_mapping(paths), backends=tuple(backends),
        quality=parse_quality(raw, source, model_ids, backend_names),
        distribution=frozen_mapping(distribution), speed=frozen_mapping(speed),
        case_timeout=float(case_timeout) if case_timeout is not None else None, raw=dict(raw),
    )
