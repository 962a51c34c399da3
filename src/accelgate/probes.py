"""The pieces of process-wide state a case can change, each readable and (mostly) restorable.

A backend runs in the same process as every later case. What it changes beyond its own
pipeline copy (torch's default dtype or device, TF32, mkldnn, flush-denormal, threads,
dynamo and inductor configs, a function such as `F.scaled_dot_product_attention`, the methods
of a model class) would otherwise be inherited by the next case: patching the denoiser
class's `forward` made eager fail as reference drift, `torch.set_default_device("meta")`
errored the next seven cases. `accelgate.sandbox` records these probes before a case and
restores them after.

A `Probe` reads one value and writes it back; `write=None` marks what cannot be put back
from Python (inference mode, a dispatch mode left on the stack, inter-op threads once the pool
runs): a case that changes one of those leaves later cases its victims, and
`--accelgate-isolate` is the way out. `Namespace` is a module's or a class's attribute table,
compared by identity, so a monkeypatch is seen whatever it replaced.
"""
from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CONFIG_MODULES = ("torch._dynamo.config", "torch._inductor.config")
# torch installs these itself, once, the first time torch.compile runs (dynamo's generation
# tagging of nn.Module.__init__): not a backend's change, and undoing it only makes torch redo it
TORCH_LAZY_PATCHES = ("/torch/_dynamo/", "/torch/_inductor/")
TORCH_LAZY_NAMES = ("___has_generation_tag_patch",)
# caches Python itself adds to a class (copyreg's __slotnames__ on the first deepcopy): not patches
PYTHON_CACHES = ("__slotnames__",)


@dataclass(frozen=True)
class Probe:
    key: str  # what the report calls it
    read: Callable[[], Any]
    write: Callable[[Any], None] | None = None
    show: Callable[[Any], str] = repr


def describe_object(value: Any) -> str:
    """'patched_forward (mypackage.accel)' for a function, the repr otherwise."""
    if value is None:
        return "absent"
    target = getattr(value, "__func__", value)
    name = getattr(target, "__qualname__", None)
    if name and callable(target):
        return f"{name} ({getattr(target, '__module__', '?')})"
    return repr(value)


def lazy_torch_patch(value: Any) -> bool:
    """A function torch's compiler stack installs on first use (see TORCH_LAZY_PATCHES)."""
    code = getattr(getattr(value, "__func__", value), "__code__", None)
    return code is not None and any(part in code.co_filename.replace("\\", "/") for part in TORCH_LAZY_PATCHES)


class Namespace:
    """The functions of a module (not its submodules, which appear as they are imported, nor its
    classes, which torch rebinds itself: `torch.Storage` follows the default dtype), or the
    methods and descriptors of a class (not its data attributes: libraries fill caches and
    registries there on first use, e.g. diffusers' `TransformerBlockRegistry._is_registered`)."""

    def __init__(self, label: str, owner: Any):
        self.label = label
        self.owner = owner
        self.is_class = isinstance(owner, type)

    def read(self) -> dict[str, Any]:
        table = dict(vars(self.owner))
        if self.is_class:
            return {k: v for k, v in table.items() if callable(v) or hasattr(v, "__get__")}
        return {k: v for k, v in table.items() if callable(v) and not isinstance(v, (type, types.ModuleType))}

    def differences(self, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
        names = [n for n in before if n not in after or after[n] is not before[n]]
        if self.is_class:
            names += [n for n in after if n not in before]
        return [n for n in names if n not in PYTHON_CACHES]

    def restore(self, before: dict[str, Any], names: list[str]) -> None:
        for name in names:
            if name in before:
                setattr(self.owner, name, before[name])
            elif name in vars(self.owner):
                delattr(self.owner, name)


def class_namespaces(classes) -> list[Namespace]:
    """Every class of `classes` and its bases (builtins and `object` excluded)."""
    seen, out = set(), []
    for cls in classes:
        for base in inspect.getmro(cls) if isinstance(cls, type) else ():
            if base.__module__ == "builtins" or base in seen or base.__module__.startswith(("typing", "abc")):
                continue
            seen.add(base)
            out.append(Namespace(f"{base.__module__}.{base.__qualname__}", base))
    return out


LIBRARY_PREFIXES = ("diffusers.models.", "diffusers.pipelines.", "diffusers.schedulers.", "diffusers.hooks.")


def library_classes() -> list[type]:
    """Every class defined in the diffusers model, pipeline, scheduler and hook modules imported
    so far: a backend may patch a class of another model than its own case's."""
    out = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(LIBRARY_PREFIXES):
            continue
        out += [v for v in vars(module).values() if isinstance(v, type) and v.__module__ == name]
    return out


def base_namespaces() -> list[Namespace]:
    import torch
    import torch.nn.functional as F

    return [Namespace("torch", torch), Namespace("torch.nn.functional", F), *class_namespaces([torch.Tensor]),
            *class_namespaces([torch.nn.Module])]


# ------------------------------------------------------------------------------ scalar probes
def _flush_denormal() -> bool:
    import torch

    return bool((torch.tensor([1e-39], dtype=torch.float32, device="cpu") * 1.0).item() == 0.0)


def _default_device() -> str | None:
    import torch

    context = getattr(getattr(torch, "_GLOBAL_DEVICE_CONTEXT", None), "device_context", None)
    return None if context is None else str(context.device)


def _function_modes() -> tuple:
    from torch.overrides import _get_current_function_mode_stack  # noqa: PLC2701 (torch's own helper)

    return tuple(m for m in _get_current_function_mode_stack() if type(m).__name__ != "DeviceContext")


def _set_function_modes(modes: tuple) -> None:
    import torch

    current = _function_modes()
    if current[: len(modes)] == modes:
        for _ in range(len(current) - len(modes)):
            torch._C._pop_torch_function_stack()
    else:
        raise RuntimeError("the torch function mode stack lost modes it had")


def config_values(name: str) -> dict[str, Any] | None:
    """A torch config module's effective values (None: not imported, so all at their defaults)."""
    module = sys.modules.get(name)
    entries = getattr(module, "_config", None)
    if entries is None:
        return None
    from torch.utils._config_module import _UNSET_SENTINEL  # noqa: PLC2701

    values = {}
    for key, entry in entries.items():
        override = entry.user_override.get()
        values[key] = ("set", override) if override is not _UNSET_SENTINEL else ("default", None)
    return values


def config_differences(name: str, before: dict | None, after: dict | None) -> list[tuple[str, str, str]]:
    """(key, before, after) for every config entry whose effective value changed."""
    module = sys.modules.get(name)
    if after is None or module is None:
        return []
    out = []
    for key, entry in module._config.items():
        old = (before or {}).get(key, ("default", None))
        new = after.get(key, ("default", None))
        old_value = entry.default if old[0] == "default" else old[1]
        new_value = entry.default if new[0] == "default" else new[1]
        try:
            same = bool(old_value == new_value)
        except Exception:  # noqa: BLE001 (an odd value type: compare by identity)
            same = old_value is new_value
        if not same:
            out.append((key, repr(old_value), repr(new_value)))
    return out


def restore_config(name: str, before: dict | None) -> None:
    module = sys.modules.get(name)
    if module is None or getattr(module, "_config", None) is None:
        return
    from torch.utils._config_module import _UNSET_SENTINEL  # noqa: PLC2701

    for key, entry in module._config.items():
        kind, value = (before or {}).get(key, ("default", None))
        entry.user_override.set(value if kind == "set" else _UNSET_SENTINEL)


def _flag(owner: Any, attribute: str) -> Probe | None:
    """A torch.backends flag, if this build can read it."""
    try:
        getattr(owner, attribute)
    except Exception:  # noqa: BLE001 (not in this build)
        return None
    label = f"{getattr(owner, '__name__', None) or 'torch.backends.cuda.matmul'}.{attribute}"
    return Probe(label, lambda: getattr(owner, attribute), lambda value: setattr(owner, attribute, value))


def scalar_probes() -> list[Probe]:
    """torch's process-wide settings a case can change (read once a case runs: torch imported)."""
    import importlib

    import torch
    from torch.backends import ContextProp

    probes = [
        Probe("torch default dtype", torch.get_default_dtype, torch.set_default_dtype),
        Probe("torch default device (torch.set_default_device)", _default_device, torch.set_default_device,
              lambda v: "not set (cpu)" if v is None else repr(v)),
        Probe("torch function modes", _function_modes, _set_function_modes, lambda v: repr(list(v))),
        Probe("torch dispatch modes", torch._C._len_torch_dispatch_stack, None, lambda v: f"{v} on the stack"),
        Probe("grad mode (torch.is_grad_enabled)", torch.is_grad_enabled, torch.set_grad_enabled),
        Probe("inference mode (torch.is_inference_mode_enabled)", torch.is_inference_mode_enabled, None),
        Probe("anomaly detection", torch.is_anomaly_enabled, torch.set_anomaly_enabled),
        Probe("deterministic algorithms",
              lambda: (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
              lambda v: torch.use_deterministic_algorithms(v[0], warn_only=v[1])),
        Probe("float32 matmul precision", torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
        Probe("torch threads (torch.get_num_threads)", torch.get_num_threads, torch.set_num_threads),
        Probe("torch inter-op threads", torch.get_num_interop_threads, torch.set_num_interop_threads),
        Probe("flush denormal (torch.set_flush_denormal)", _flush_denormal, torch.set_flush_denormal),
    ]
    for name in ("cudnn", "mkldnn", "miopen", "mha", "opt_einsum", "nnpack", "mkl"):
        try:
            module = importlib.import_module(f"torch.backends.{name}")
        except Exception:  # noqa: BLE001 (not in this build)
            continue
        props = [k for k, v in vars(type(module)).items() if isinstance(v, ContextProp)]
        probes += [p for p in (_flag(module, k) for k in props + ["enabled", "strategy"]) if p is not None]
    matmul = torch.backends.cuda.matmul
    probes += [p for p in (_flag(matmul, k) for k in ("allow_tf32", "allow_fp16_reduced_precision_reduction",
                                                      "allow_bf16_reduced_precision_reduction",
                                                      "allow_fp16_accumulation", "fp32_precision")) if p]
    for kernel in ("flash", "mem_efficient", "math", "cudnn"):
        getter = getattr(torch.backends.cuda, f"{kernel}_sdp_enabled", None)
        setter = getattr(torch.backends.cuda, f"enable_{kernel}_sdp", None)
        if getter is not None:
            probes.append(Probe(f"torch.backends.cuda.{kernel}_sdp_enabled()", getter, setter))
    fastpath = getattr(torch.backends.mha, "get_fastpath_enabled", None)
    if fastpath is not None:
        probes.append(Probe("torch.backends.mha fastpath", fastpath, torch.backends.mha.set_fastpath_enabled))
    unique: dict[str, Probe] = {}
    for probe in probes:
        unique.setdefault(probe.key, probe)
    return list(unique.values())


def rng_state() -> tuple:
    """torch's, numpy's and Python's global RNG states (CUDA's once initialized)."""
    import random

    import numpy as np
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def set_rng_state(state: tuple) -> None:
    import random

    import numpy as np
    import torch

    cpu, cuda, numpy_state, python_state = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
