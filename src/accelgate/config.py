"""The matrix as data: one TOML schema, read from `[tool.accelgate]` in pyproject.toml or
from a file given with `--accelgate-config` (same keys at top level).

Every key is checked here, before a single pipeline loads: a typo or a wrong type is a
`ConfigError` that names the file, the table, the key and what is allowed, because a
silently ignored tolerance is how a quality gate starts lying.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from accelgate.backends.registry import BACKENDS, BackendSpec, get_backend
from accelgate.metrics.pairwise import PAIRWISE_METRICS
from accelgate.models.registry import DENOISERS, DTYPES, MODELS, TASKS, ModelSpec, frozen_mapping

# Strict defaults: what a lossless acceleration must meet. Measured on the tiny CPU matrix:
# lossless backends give SSIM 1.0 and differ by at most a few uint8 levels.
DEFAULT_TOLERANCES: dict[str, float] = {"ssim": 0.995, "psnr": 35.0, "color_shift": 1.0, "max_abs": 64.0}

TOP_KEYS = {
    "reference": str, "device": str, "baseline_dir": str, "threads": int,
    "models": list, "backends": list, "generation": dict, "model": dict,
    "backend": dict, "tolerances": dict, "loosen": list, "distribution": dict,
    "speed": dict,
}
GENERATION_KEYS = {
    "steps": int, "seed": int, "guidance_scale": (int, float), "scheduler": str,
    "dtype": str, "prompt_set": str, "prompt_limit": int,
}
MODEL_KEYS = {
    **GENERATION_KEYS, "resolutions": list, "path": str, "call_kwargs": dict,
    # only for a model that is not in the catalog:
    "repo_id": str, "pipeline_class": str, "task": str, "denoiser": str, "variant": str, "gpu": bool,
}
NEW_MODEL_REQUIRED = ("pipeline_class", "task", "denoiser", "resolutions", "steps", "guidance_scale", "prompt_set")
BACKEND_KEYS = {"factory": str, "options": dict, "models": list, "description": str, "min_speedup": (int, float),
                "recompile_budget": int}
LOOSEN_KEYS = {"backend": str, "model": str, "reason": str, **{m: (int, float) for m in PAIRWISE_METRICS}}


class ConfigError(Exception):
    """The configuration is wrong; the message says where and how to fix it."""


@dataclass(frozen=True)
class Tolerance:
    metric: str
    threshold: float | None
    reason: str = ""  # set when a loosening produced this threshold


@dataclass(frozen=True)
class Loosening:
    backend: str
    model: str | None
    thresholds: Mapping[str, float]
    reason: str


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
    tolerances: Mapping[str, float]
    loosenings: tuple[Loosening, ...]
    distribution: Mapping[str, Any] = field(default_factory=frozen_mapping)
    speed: Mapping[str, Any] = field(default_factory=frozen_mapping)

    def tolerance(self, metric: str, model: str, backend: str) -> Tolerance:
        """Most specific wins: (model, backend) loosening, then backend, then the default."""
        for wanted_model in (model, None):
            for loose in self.loosenings:
                if loose.backend == backend and loose.model == wanted_model and metric in loose.thresholds:
                    return Tolerance(metric, loose.thresholds[metric], loose.reason)
        return Tolerance(metric, self.tolerances.get(metric))

    def backend(self, name: str) -> BackendChoice:
        for choice in self.backends:
            if choice.spec.name == name:
                return choice
        raise KeyError(name)


def _where(source: Path | None, table: str) -> str:
    origin = str(source) if source else "the built-in defaults"
    return f"{origin}, [{table}]" if table else origin


def _check_keys(table: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> None:
    for key, value in table.items():
        if key not in allowed:
            close = [k for k in allowed if k.replace("_", "") == key.replace("_", "") or k.startswith(key[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; allowed keys: {', '.join(sorted(allowed))}")
        expected = allowed[key]
        if isinstance(value, bool) and expected is not bool:
            ok = False
        else:
            ok = isinstance(value, expected)
        if not ok:
            names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            raise ConfigError(f"{where}: key {key!r} must be a {names}, got {type(value).__name__} {value!r}")


_RESOLUTION = re.compile(r"^\s*(\d+)\s*[x*×]\s*(\d+)\s*$")


def parse_resolution(text: str | list | tuple, where: str = "resolution") -> tuple[int, int]:
    """'64x64' or [64, 64] -> (width, height); rejects what no diffusion VAE can make."""
    if isinstance(text, (list, tuple)) and len(text) == 2 and all(isinstance(v, int) for v in text):
        width, height = text
    else:
        match = _RESOLUTION.match(str(text))
        if not match:
            raise ConfigError(f"{where}: {text!r} is not a resolution; write WIDTHxHEIGHT, e.g. '512x512'")
        width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise ConfigError(
            f"{where}: {width}x{height} cannot be generated: width and height must be positive multiples of 8 "
            "(the VAE downsamples by 8)"
        )
    return width, height


def format_resolution(resolution: tuple[int, int]) -> str:
    return f"{resolution[0]}x{resolution[1]}"


def read_raw(path: Path, from_pyproject: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    if from_pyproject:
        data = data.get("tool", {}).get("accelgate", {})
    return data


def find_config(rootdir: Path, explicit: str | None) -> tuple[Path | None, dict[str, Any]]:
    """The explicit file, else `[tool.accelgate]` of rootdir's pyproject.toml, else defaults."""
    if explicit:
        path = Path(explicit).expanduser().resolve()
        return path, read_raw(path, from_pyproject=path.name == "pyproject.toml")
    pyproject = rootdir / "pyproject.toml"
    if pyproject.is_file():
        return pyproject, read_raw(pyproject, from_pyproject=True)
    return None, {}


def _model_from_table(model_id: str, table: Mapping[str, Any], general: Mapping[str, Any], where: str) -> ModelSpec:
    settings = {**general, **{k: v for k, v in table.items() if k in GENERATION_KEYS}}
    if "dtype" in settings and settings["dtype"] not in DTYPES:
        raise ConfigError(f"{where}: dtype {settings['dtype']!r}; expected one of {', '.join(DTYPES)}")
    if "prompt_set" in settings:
        from accelgate.prompts import PROMPT_SETS

        if settings["prompt_set"] not in PROMPT_SETS:
            raise ConfigError(
                f"{where}: unknown prompt_set {settings['prompt_set']!r}; known sets: {', '.join(sorted(PROMPT_SETS))}"
            )
    if "resolutions" in table:
        if not table["resolutions"]:
            raise ConfigError(f"{where}: resolutions is empty; give at least one, e.g. ['512x512']")
        settings["resolutions"] = tuple(parse_resolution(r, f"{where} resolutions") for r in table["resolutions"])
    if "guidance_scale" in settings:
        settings["guidance_scale"] = float(settings["guidance_scale"])
    if model_id in MODELS:
        base = MODELS[model_id]
        extra = {k for k in ("repo_id", "pipeline_class", "task", "denoiser", "variant", "gpu") if k in table}
        if extra:
            raise ConfigError(
                f"{where}: {', '.join(sorted(extra))} cannot be changed for catalog model {model_id!r}; "
                "declare a new model id instead"
            )
        if "call_kwargs" in table:
            settings["call_kwargs"] = frozen_mapping({**base.call_kwargs, **table["call_kwargs"]})
        return replace(base, **settings)
    missing = [k for k in NEW_MODEL_REQUIRED if k not in table]
    if missing or ("repo_id" not in table and "path" not in table):
        need = missing + ([] if ("repo_id" in table or "path" in table) else ["repo_id or path"])
        raise ConfigError(
            f"{where}: {model_id!r} is not a catalog model ({', '.join(sorted(MODELS))}); to declare a new one "
            f"also give: {', '.join(need)}"
        )
    for key, allowed in (("task", TASKS), ("denoiser", DENOISERS)):
        if table[key] not in allowed:
            raise ConfigError(f"{where}: {key} {table[key]!r}; expected one of {', '.join(allowed)}")
    return ModelSpec(
        id=model_id, task=table["task"], pipeline_class=table["pipeline_class"], denoiser=table["denoiser"],
        source="hub", repo_id=table.get("repo_id", table.get("path", "")), variant=table.get("variant"),
        gpu=table.get("gpu", True), call_kwargs=frozen_mapping(table.get("call_kwargs")),
        **{k: v for k, v in settings.items() if k != "call_kwargs"},
    )


def _backend_from_table(name: str, table: Mapping[str, Any], where: str) -> BackendChoice:
    from accelgate.backends.user import user_backend

    options = table.get("options", {})
    if "factory" in table:
        if name in BACKENDS:
            raise ConfigError(f"{where}: {name!r} is a built-in backend; give the factory backend another name")
        try:
            spec = user_backend(name, table["factory"], options)
        except (ValueError, ImportError) as error:
            raise ConfigError(f"{where}: {error}") from None
    elif name in BACKENDS:
        spec = get_backend(name).with_options(options)
    else:
        raise ConfigError(
            f"{where}: unknown backend {name!r}; built-in backends: {', '.join(sorted(BACKENDS))}; "
            'or declare a user backend with factory = "module:function"'
        )
    models = tuple(table["models"]) if "models" in table else None
    return BackendChoice(spec, models, table.get("min_speedup"), table.get("recompile_budget"))


def build_config(raw: Mapping[str, Any], source: Path | None, root: Path) -> Config:
    """Validate the raw TOML mapping and resolve it against the registries."""
    import accelgate.backends  # noqa: F401  (registers built-in backends)
    import accelgate.models.catalog  # noqa: F401  (registers catalog models)

    where = _where(source, "tool.accelgate" if source and source.name == "pyproject.toml" else "")
    _check_keys(raw, TOP_KEYS, where)
    general = raw.get("generation", {})
    _check_keys(general, GENERATION_KEYS, _where(source, "generation"))

    model_tables = raw.get("model", {})
    model_ids = list(raw.get("models", sorted(k for k, m in MODELS.items() if m.source == "tiny")))
    for model_id in model_tables:
        if model_id not in model_ids:
            model_ids.append(model_id)
    models, paths = [], {}
    for model_id in model_ids:
        table = model_tables.get(model_id, {})
        table_where = _where(source, f"model.{model_id}")
        _check_keys(table, MODEL_KEYS, table_where)
        if not isinstance(model_id, str):
            raise ConfigError(f"{where}: models must be a list of model ids, got {model_id!r}")
        if model_id not in MODELS and not table:
            raise ConfigError(
                f"{where}: unknown model {model_id!r}; catalog models: {', '.join(sorted(MODELS))}; "
                f"or declare it under [model.{model_id}]"
            )
        models.append(_model_from_table(model_id, table, general, table_where))
        if "path" in table:
            paths[model_id] = table["path"]

    backend_tables = raw.get("backend", {})
    backend_names = list(raw.get("backends", ["eager"]))
    for name in backend_tables:
        if name not in backend_names:
            backend_names.append(name)
    backends = []
    for name in backend_names:
        table = backend_tables.get(name, {})
        table_where = _where(source, f"backend.{name}")
        _check_keys(table, BACKEND_KEYS, table_where)
        choice = _backend_from_table(name, table, table_where)
        unknown = [m for m in (choice.models or ()) if m not in model_ids]
        if unknown:
            raise ConfigError(f"{table_where}: models {unknown} are not in the matrix; known: {', '.join(model_ids)}")
        backends.append(choice)

    reference = raw.get("reference", "eager")
    if reference not in backend_names:
        raise ConfigError(f"{where}: reference backend {reference!r} is not among the backends: {', '.join(backend_names)}")

    tolerances = dict(DEFAULT_TOLERANCES)
    tolerance_table = raw.get("tolerances", {})
    _check_keys(tolerance_table, {m: (int, float) for m in PAIRWISE_METRICS}, _where(source, "tolerances"))
    tolerances.update({k: float(v) for k, v in tolerance_table.items()})

    loosenings = []
    for index, entry in enumerate(raw.get("loosen", [])):
        entry_where = _where(source, f"[loosen]] #{index + 1}")
        if not isinstance(entry, dict):
            raise ConfigError(f"{entry_where}: each [[loosen]] entry must be a table")
        _check_keys(entry, LOOSEN_KEYS, entry_where)
        if "backend" not in entry or not str(entry.get("reason", "")).strip():
            raise ConfigError(
                f"{entry_where}: a loosening needs backend = \"...\" and a one-line reason = \"...\" "
                "saying why the stricter default cannot hold"
            )
        if entry["backend"] not in backend_names:
            raise ConfigError(f"{entry_where}: backend {entry['backend']!r} is not in the matrix: {', '.join(backend_names)}")
        if "model" in entry and entry["model"] not in model_ids:
            raise ConfigError(f"{entry_where}: model {entry['model']!r} is not in the matrix: {', '.join(model_ids)}")
        thresholds = {m: float(entry[m]) for m in PAIRWISE_METRICS if m in entry}
        if not thresholds:
            raise ConfigError(f"{entry_where}: names no metric to loosen; metrics: {', '.join(PAIRWISE_METRICS)}")
        loosenings.append(Loosening(entry["backend"], entry.get("model"), frozen_mapping(thresholds), entry["reason"]))

    threads = raw.get("threads", 1)
    if threads < 1:
        raise ConfigError(f"{where}: threads must be >= 1, got {threads}")
    baseline_dir = Path(raw.get("baseline_dir", "baselines"))
    base = source.parent if source else root
    return Config(
        source=source, root=root, reference=reference, device=parse_device(raw.get("device", "auto")),
        baseline_dir=baseline_dir if baseline_dir.is_absolute() else base / baseline_dir, threads=threads,
        models=tuple(models), model_paths=frozen_mapping(paths), backends=tuple(backends),
        tolerances=frozen_mapping(tolerances), loosenings=tuple(loosenings),
        distribution=frozen_mapping(_distribution_settings(raw.get("distribution", {}), _where(source, "distribution"))),
        speed=frozen_mapping(_speed_settings(raw.get("speed", {}), _where(source, "speed"))),
    )


def _distribution_settings(table: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """`[distribution]` is validated by the distribution module, which owns its schema."""
    from accelgate.distribution_config import validate_distribution_table

    return validate_distribution_table(table, where)


def _speed_settings(table: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """`[speed]` is validated by the speed module, which owns its schema."""
    from accelgate.speed import validate_speed_table

    return validate_speed_table(table, where)


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"


def parse_device(text: str) -> str:
    value = str(text).strip().lower()
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return value
    raise ConfigError(f"device {text!r} is not valid; choose one of: {DEVICE_CHOICES}")


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def parse_name_list(text: str, allowed: list[str], option: str) -> list[str]:
    """`--models a,b` -> ['a', 'b']; an unknown name is an error listing the valid ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"{option} is empty; valid values: {', '.join(allowed)}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ConfigError(f"{option}: unknown {', '.join(map(repr, unknown))}; valid values: {', '.join(allowed)}")
    return names
