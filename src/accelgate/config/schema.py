"""The leaf of the config package: the one error type, the parse functions, the one lookup.

Everything a config table, a command-line option or a report needs to read a value the same
way lives here, importing nothing of accelgate: a `ConfigError` names the file, the table,
the key and what is allowed, because a silently ignored setting is how a gate starts lying;
`most_specific` is the single "most specific rule wins" lookup every override table uses
(per-image loosenings, distribution loosenings, speed floors).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

R = TypeVar("R")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"
_RESOLUTION = re.compile(r"^\s*(\d+)\s*[x*×]\s*(\d+)\s*$")


class ConfigError(Exception):
    """The configuration is wrong; the message says where and how to fix it."""


@dataclass(frozen=True)
class Loosening:
    """A threshold override for one backend (on every model, or on one), with its reason."""

    backend: str
    model: str | None
    thresholds: Mapping[str, float]
    reason: str


def check_keys(table: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> None:
    """Every key known and of its type (bool is not a number here); a near miss is suggested."""
    for key, value in table.items():
        if key not in allowed:
            close = [k for k in allowed if k.replace("_", "") == key.replace("_", "") or k.startswith(key[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; allowed keys: {', '.join(sorted(allowed))}")
        expected = allowed[key]
        ok = False if isinstance(value, bool) and expected is not bool else isinstance(value, expected)
        if not ok:
            names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            raise ConfigError(f"{where}: key {key!r} must be a {names}, got {type(value).__name__} {value!r}")


def read_utf8(path: Path, what: str, hint: str = "") -> str:
    """A file the config names, as text, or a ConfigError saying which file and what is wrong:
    absent (`hint` says where a relative path is read from), unreadable, or not UTF-8 (with
    the first bad byte, so it can be found)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist{hint}") from None
    except OSError as error:
        raise ConfigError(f"{what} {path} cannot be read: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
                          f"{error.start}); save it as UTF-8") from None


def parse_loosening(entry: Any, metrics: Iterable[str], where: str, table: str = "loosen") -> Loosening:
    """One `[[loosen]]` entry: a table with a backend, an optional model, a one-line reason and
    at least one metric's threshold. Without a reason it is refused: a threshold relaxed
    without saying why is how a gate ends up hiding the failure it was loosened around."""
    metrics = list(metrics)
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: each [[{table}]] entry must be a table")
    check_keys(entry, {"backend": str, "model": str, "reason": str, **{m: (int, float) for m in metrics}}, where)
    if "backend" not in entry or not str(entry.get("reason", "")).strip():
        raise ConfigError(f'{where}: a loosening needs backend = "..." and a one-line reason = "..." '
                          "saying why the stricter default cannot hold")
    thresholds = {m: float(entry[m]) for m in metrics if m in entry}
    if not thresholds:
        raise ConfigError(f"{where}: names no metric to loosen; metrics: {', '.join(metrics)}")
    return Loosening(entry["backend"], entry.get("model"), MappingProxyType(thresholds), entry["reason"])


def where(source, table: str) -> str:
    """'FILE, [table]' for messages; the built-in defaults when no file was read."""
    origin = str(source) if source else "the built-in defaults"
    return f"{origin}, [{table}]" if table else origin


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


def parse_device(text: str) -> str:
    value = str(text).strip().lower()
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return value
    raise ConfigError(f"device {text!r} is not valid; choose one of: {DEVICE_CHOICES}")


REGEN_MODES = ("all", "missing")


def parse_regen_mode(text: str) -> str:
    """`--regen-baselines[=all|missing]`: which reference cases write their baseline."""
    value = str(text).strip().lower()
    if value not in REGEN_MODES:
        raise ConfigError(f"--regen-baselines={text!r}: choose one of {', '.join(REGEN_MODES)} "
                          "(all: every reference case; missing: only missing or stale baselines)")
    return value


def parse_name_list(text: str, allowed: list[str], option: str) -> list[str]:
    """`--models a,b` -> ['a', 'b']; an unknown name is an error listing the valid ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"{option} is empty; valid values: {', '.join(allowed)}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ConfigError(f"{option}: unknown {', '.join(map(repr, unknown))}; valid values: {', '.join(allowed)}")
    return names


def parse_prompt_limit(text: str) -> int:
    """`--prompt-limit N`: N >= 1 prompts of each set (the first N: HPD v2's styles stay balanced)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"--prompt-limit takes a whole number of prompts >= 1, got {text!r}") from None
    if value < 1:
        raise ValueError(f"--prompt-limit must be >= 1 (the number of prompts per set), got {value}")
    return value


def option_type(parse: Callable[[str], R]) -> Callable[[str], R]:
    """`parse` as an argparse `type=`: its ConfigError or ValueError becomes the usage error
    pytest prints for a bad command-line value."""
    def convert(text: str) -> R:
        try:
            return parse(text)
        except (ConfigError, ValueError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__
    return convert


def most_specific(rules: Iterable[Any], model: str, backend: str, pick: Callable[[Any], R | None]) -> tuple[R, Any] | None:
    """The one "most specific rule wins" lookup: a rule for (model, backend) beats one for the
    backend on every model (`rule.model is None`). `pick(rule)` returns the rule's value for
    what is asked, or None when the rule does not say; returns (value, rule) or None."""
    rules = list(rules)
    for wanted in (model, None):
        for rule in rules:
            if rule.backend == backend and rule.model == wanted:
                value = pick(rule)
                if value is not None:
                    return value, rule
    return None
