"""User backends: an acceleration of your own, named by import path in the config.

    [tool.accelgate.backend.my-trt]
    factory = "my_accel.trt:build"      # def build(pipe, **options) -> DiffusionPipeline
    options = { precision = "fp16" }

The factory is resolved when the config is loaded, not when the first case runs: a typo
in the path is a usage error reported once, up front, instead of N failed cases.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping

from accelgate.backends.registry import BackendSpec, Requirement
from accelgate.registry import frozen_mapping

_HOW_TO_FIX = (
    "write it as 'package.module:function', and make the module importable from the test run "
    "(installed in the environment, or on sys.path, e.g. under the pytest rootdir with "
    "`pythonpath = [\".\"]` in [tool.pytest.ini_options])"
)


def resolve_factory(text: str, *, backend: str | None = None) -> Callable[..., Any]:
    """Import `module:attr` (attr may be dotted, `module:Class.method`) and return the callable.

    Raises ValueError naming the backend, the string and what went wrong, and how to fix it.
    """
    where = f"backend {backend!r}: " if backend else ""
    if not isinstance(text, str):
        raise ValueError(f"{where}factory must be a string 'module:function', got {type(text).__name__} {text!r}")
    module_name, sep, attr_path = text.strip().partition(":")
    if not sep or not module_name or not attr_path or ":" in attr_path:
        raise ValueError(f"{where}factory {text!r} is not of the form 'module:function'; {_HOW_TO_FIX}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while importing
        raise ValueError(
            f"{where}factory {text!r}: importing module {module_name!r} failed with "
            f"{type(exc).__name__}: {exc}; {_HOW_TO_FIX}"
        ) from exc
    walked = module_name
    for part in attr_path.split("."):
        if not hasattr(target, part):
            origin = getattr(sys.modules.get(module_name), "__file__", None)
            raise ValueError(
                f"{where}factory {text!r}: {walked!r} has no attribute {part!r}; check the name after ':' "
                f"(it must name a function defined in {module_name}"
                + (f", which was imported from {origin}: if that is not your file, another module of "
                   "that name comes first on sys.path or was imported earlier in this process" if origin else "")
                + ")"
            )
        target = getattr(target, part)
        walked = f"{walked}.{part}"
    if not callable(target):
        raise ValueError(
            f"{where}factory {text!r} names a {type(target).__name__}, not a callable; "
            "it must be a function taking (pipe, **options) and returning the pipeline"
        )
    return target


def user_backend(
    name: str,
    factory: str,
    options: Mapping[str, Any] | None = None,
    *,
    description: str = "",
    needs_cuda: bool = False,
    packages: tuple[Requirement, ...] = (),
    lossy: bool = False,
) -> BackendSpec:
    """A `BackendSpec` whose apply is `factory(pipe, **options)` (`apply_to` checks the result).

    The factory is imported now (see module docstring). `lossy` defaults to False: a user
    backend is held to the strict default tolerance until the config loosens it with a
    reason. Not registered here: the config loader decides where user backends live.
    """
    function = resolve_factory(factory, backend=name)
    return BackendSpec(
        name=name,
        apply=function,
        description=description or f"user backend {factory}",
        options=frozen_mapping(options),
        needs_cuda=needs_cuda,
        packages=tuple(packages),
        lossy=lossy,
        user=True,
        factory=factory,
    )
