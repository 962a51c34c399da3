"""Which config runs, and why: one search order, named in the run's header.

Order: `--accelgate-config FILE`, then `[tool.accelgate]` of the rootdir's pyproject.toml, then
of the invocation directory's. pytest picks its rootdir from the arguments, so a path option
written with a space (`--quality-report ../out`) could move the rootdir out of the repository
and the built-in default matrix ran silently; with the invocation directory as the fallback,
argument order never changes which config runs, and the header says which file it was, warns
when the other pyproject.toml holds another table, and says where it looked when it found none.
A file given explicitly that holds no accelgate settings is an error, never the defaults.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelgate.config.schema import ConfigError, read_utf8

PYPROJECT = "pyproject.toml"


@dataclass(frozen=True)
class Found:
    """The config to run: its file (None: the built-in defaults), its table, the header lines."""

    source: Path | None
    raw: dict[str, Any]
    notes: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's data, or a ConfigError that names the file and what is wrong with it."""
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory, not a TOML file; give the file itself "
                          f"(e.g. {path / PYPROJECT})")
    text = read_utf8(path, "config file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None


def accelgate_table(path: Path) -> dict[str, Any] | None:
    """`[tool.accelgate]` of a pyproject.toml; None when the file or the table is absent."""
    if not path.is_file():
        return None
    table = read_toml(path).get("tool", {}).get("accelgate")
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.accelgate] must be a table")
    return table


def _explicit(path: Path) -> dict[str, Any]:
    data = read_toml(path)
    nested = data.get("tool", {}).get("accelgate") if isinstance(data.get("tool"), dict) else None
    if path.name == PYPROJECT or (nested is not None and set(data) == {"tool"}):
        if nested is None:
            raise ConfigError(f"--accelgate-config {path}: it has no [tool.accelgate] table, so there is nothing to "
                              "run from it; add the table or give the file that holds it")
        return nested
    if not data:
        raise ConfigError(f"--accelgate-config {path}: the file is empty; put the [tool.accelgate] keys at its top "
                          "level (models = [...], backends = [...])")
    return data


def find_config(rootdir: Path, explicit: str | None, invocation_dir: Path | None = None) -> Found:
    """The config to run, by the order in the module docstring."""
    if explicit:
        path = Path(explicit).expanduser().resolve()
        return Found(path, _explicit(path), (f"accelgate: config {path} (--accelgate-config)",))
    candidates = [Path(rootdir) / PYPROJECT]
    if invocation_dir is not None and Path(invocation_dir).resolve() != Path(rootdir).resolve():
        candidates.append(Path(invocation_dir) / PYPROJECT)
    tables = [(path.resolve(), accelgate_table(path)) for path in candidates]
    found = [(path, table) for path, table in tables if table is not None]
    if not found:
        looked = " and ".join(str(path) for path in candidates)
        return Found(None, {}, (f"accelgate: no [tool.accelgate] table in {looked} and no --accelgate-config: "
                                "running the built-in default matrix (the catalog's tiny models on eager)",))
    (path, table), others = found[0], found[1:]
    which = "the rootdir's" if path == tables[0][0] else "the invocation directory's (the rootdir's has none)"
    notes = [f"accelgate: config {path} [tool.accelgate], {which}"]
    warnings = [f"{other} holds another [tool.accelgate] table, not used: {path} (the rootdir's) comes first; "
                f"run with --accelgate-config={other} to use it" for other, other_table in others if other_table != table]
    return Found(path, table, tuple(notes + [f"accelgate: WARNING {w}" for w in warnings]), tuple(warnings))
