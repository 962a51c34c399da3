"""What a run was measured on: the device class its baselines belong to, the machine a speed
number depends on, and a loud warning when two runs differ in hardware.

Why: it/s and memory are properties of a (GPU, driver, CUDA, torch, compiler) combination as
much as of a backend. A baseline saved on an RTX 3090 compared with a run on an H100 shows a
"speed-up" that no code change made. pytest-benchmark records the CPU and Python only, so
`machine_info` adds the accelerator and the library versions (for
`pytest_benchmark_update_machine_info`, under `MACHINE_INFO_KEY`), and `compare_machines`
names both machines when a comparison crosses hardware.

Versions are read from installed package metadata, never by importing the package: importing
nexfort under a torch it was not built for raises, and oneflow initializes CUDA on import.
torch and psutil are imported by the functions that measure, so describing or comparing
machines (the report, the plugin at start) costs no torch import.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

MACHINE_INFO_KEY = "accelgate"

# distribution names whose versions change speed numbers; None when not installed
PACKAGES = (
    "torch", "diffusers", "transformers", "accelerate", "triton",
    "onediff", "onediffx", "oneflow", "nexfort", "torchao", "DeepCache", "tomesd",
)


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's marketing name ("Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version: pynvml when installed, else nvidia-smi, else None."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0].strip() if out.strip() else None


def device_class(device: str) -> str:
    """'cpu', or the CUDA GPU model as a path-safe slug (e.g. 'cuda-nvidia-h100-80gb-hbm3'): the
    same seed gives other pixels on other hardware, so baselines are kept per device class."""
    if not device.startswith("cuda"):
        return "cpu"
    import torch

    name = torch.cuda.get_device_name(torch.device(device))
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _gpu_info(device: torch.device) -> dict[str, Any]:
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {
        "gpu_name": torch.cuda.get_device_name(index),
        "gpu_count": torch.cuda.device_count(),
        "gpu_memory_bytes": int(props.total_memory),
        "gpu_capability": "%d.%d" % (props.major, props.minor),
        "driver": _nvidia_driver(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Hardware and software a measurement on `device` depends on; JSON-able.

    `gpu_name`, `driver` and `cuda` are None off CUDA (`cuda` is then the version torch was
    built for, kept as `torch_cuda_build`). Package versions are None when not installed.
    """
    import psutil
    import torch

    dev = device if isinstance(device, torch.device) else torch.device(device)
    info: dict[str, Any] = {
        "device_class": dev.type,
        "device": str(dev),
        "gpu_name": None, "gpu_count": 0, "gpu_memory_bytes": None, "gpu_capability": None,
        "driver": None, "cuda": None, "cudnn": None,
        "torch_cuda_build": torch.version.cuda,
        "cpu_model": cpu_model(),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hostname": platform.node(),
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if dev.type == "cuda":
        info.update(_gpu_info(dev))
    info["versions"] = {name: package_version(name) for name in PACKAGES}
    info["versions"]["torch"] = torch.__version__  # keeps the local tag ("+cu132") metadata drops
    return info


def _ours(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """Our fields from either a `machine_info()` dict or a pytest-benchmark machine_info
    (ours nested under MACHINE_INFO_KEY; runs saved without it still name their CPU)."""
    if not info:
        return {}
    if "device_class" in info or "cpu_model" in info or "gpu_name" in info:
        return dict(info)
    if isinstance(info.get(MACHINE_INFO_KEY), Mapping):
        return dict(info[MACHINE_INFO_KEY])
    cpu = info.get("cpu") if isinstance(info.get("cpu"), Mapping) else {}
    brand = cpu.get("brand_raw") or info.get("processor")
    return {"cpu_model": brand} if brand else {}


def describe(info: Mapping[str, Any]) -> str:
    """One line naming the machine: "GPU NVIDIA H100 (driver 550.54, CUDA 12.4)" or the CPU."""
    ours = _ours(info)
    if ours.get("gpu_name"):
        extra = ", ".join(f"{label} {ours[k]}" for k, label in (("driver", "driver"), ("cuda", "CUDA")) if ours.get(k))
        return f"GPU {ours['gpu_name']!r}" + (f" ({extra})" if extra else "")
    if ours.get("cpu_model"):
        n = ours.get("cpu_count_logical")
        return f"CPU {ours['cpu_model']!r}" + (f" ({n} logical cores)" if n else "")
    return "an unrecorded machine"


def _hardware(ours: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    return (ours.get("device_class") or "cpu", ours.get("gpu_name"), ours.get("cpu_model"))


def hardware_label(info: Mapping[str, Any] | None) -> str:
    """What speed numbers are a property of: the GPU name on CUDA, else the CPU model."""
    ours = _ours(info)
    return ours.get("gpu_name") or ours.get("cpu_model") or "unrecorded machine"


def compare_machines(saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> str | None:
    """A loud warning when `saved` and `current` were measured on different hardware, else None.

    Hardware is the device class plus the GPU name on CUDA, or the CPU model on CPU (a CPU
    run is timed on the CPU; a GPU run's host CPU only matters for compile times). Software
    differences (torch, driver, onediff) are what a regression run is meant to compare, so
    alone they give no warning; they are listed inside a hardware warning as context.
    """
    a, b = _ours(saved), _ours(current)
    if not a or not b:
        return None
    (cls_a, gpu_a, cpu_a), (cls_b, gpu_b, cpu_b) = _hardware(a), _hardware(b)
    if cls_a == cls_b and (gpu_a == gpu_b if cls_a == "cuda" else cpu_a == cpu_b):
        return None
    lines = [
        "!" * 78,
        "MACHINE MISMATCH: speed and memory are compared across different hardware.",
        f"  saved run:   {describe(a)} [{cls_a}]",
        f"  current run: {describe(b)} [{cls_b}]",
        "  Differences in it/s, E2E time, memory and warmup measure the hardware, not the",
        "  backend. Re-save the baseline on this machine or compare runs from one machine.",
    ]
    va, vb = a.get("versions") or {}, b.get("versions") or {}
    changed = [f"{k} {va[k]} -> {vb[k]}" for k in sorted(set(va) & set(vb)) if va[k] != vb[k]]
    for key in ("driver", "cuda"):
        if a.get(key) and b.get(key) and a[key] != b[key]:
            changed.append(f"{key} {a.get(key)} -> {b.get(key)}")
    if changed:
        lines.append("  Software also differs: " + "; ".join(changed))
    lines.append("!" * 78)
    return "\n".join(lines)
