"""machine_info says what a number was measured on; compare_machines shouts when that differs."""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch

from accelgate import machine
from accelgate.machine import MACHINE_INFO_KEY, compare_machines, describe, machine_info


def test_cpu_machine_info_is_json_and_names_versions():
    info = machine_info("cpu")
    json.dumps(info, allow_nan=False)
    assert info["device_class"] == "cpu" and info["gpu_name"] is None and info["driver"] is None
    assert info["cpu_model"] and info["cpu_count_logical"] >= 1
    versions = info["versions"]
    assert versions["torch"] == torch.__version__
    import diffusers

    assert versions["diffusers"] == diffusers.__version__
    for name in ("onediff", "onediffx", "oneflow", "nexfort", "transformers"):
        assert name in versions  # None when not installed, never missing


def test_versions_are_read_without_importing_the_compilers():
    before = {m for m in ("nexfort", "oneflow", "onediff", "onediffx") if m in sys.modules}
    machine_info("cpu")
    after = {m for m in ("nexfort", "oneflow", "onediff", "onediffx") if m in sys.modules}
    assert after == before  # importing nexfort under the wrong torch raises


def test_cuda_machine_info_reads_the_gpu(monkeypatch):
    props = SimpleNamespace(total_memory=80 * 2**30, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=None: props)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(machine, "_nvidia_driver", lambda: "550.54.15")
    info = machine_info("cuda")
    assert info["device_class"] == "cuda"
    assert (info["gpu_name"], info["driver"], info["gpu_capability"]) == ("NVIDIA H100 80GB HBM3", "550.54.15", "9.0")
    assert info["cuda"] == torch.version.cuda and info["gpu_memory_bytes"] == 80 * 2**30


def gpu(name, driver="550.54", cuda="12.4", torch_version="2.5.1"):
    return {"device_class": "cuda", "gpu_name": name, "driver": driver, "cuda": cuda,
            "cpu_model": "AMD EPYC 7543 32-Core Processor", "versions": {"torch": torch_version}}


def cpu(model, torch_version="2.15.0"):
    return {"device_class": "cpu", "gpu_name": None, "cpu_model": model, "cpu_count_logical": 2,
            "versions": {"torch": torch_version}}


def test_same_gpu_gives_no_warning_even_with_new_software():
    assert compare_machines(gpu("NVIDIA GeForce RTX 4090"), gpu("NVIDIA GeForce RTX 4090")) is None
    # a torch or driver upgrade is what a regression run is for: no hardware warning
    assert compare_machines(gpu("NVIDIA GeForce RTX 4090", driver="550", torch_version="2.4"),
                            gpu("NVIDIA GeForce RTX 4090", driver="560", torch_version="2.5")) is None


def test_different_gpus_warn_loudly_naming_both():
    text = compare_machines(gpu("NVIDIA GeForce RTX 3090", torch_version="2.4.0"),
                            gpu("NVIDIA H100 80GB HBM3", driver="560.35", torch_version="2.5.1"))
    assert text is not None and "MACHINE MISMATCH" in text and text.startswith("!" * 20)
    assert "saved run:   GPU 'NVIDIA GeForce RTX 3090'" in text
    assert "current run: GPU 'NVIDIA H100 80GB HBM3' (driver 560.35, CUDA 12.4)" in text
    assert "torch 2.4.0 -> 2.5.1" in text and "driver 550.54 -> 560.35" in text


def test_gpu_against_cpu_run_warns():
    text = compare_machines(gpu("NVIDIA A100-SXM4-40GB"), cpu("Intel(R) Xeon(R) Processor"))
    assert "GPU 'NVIDIA A100-SXM4-40GB'" in text and "CPU 'Intel(R) Xeon(R) Processor'" in text
    assert "[cuda]" in text and "[cpu]" in text


def test_cpu_runs_compare_cpu_models():
    assert compare_machines(cpu("Intel(R) Xeon(R) Processor"), cpu("Intel(R) Xeon(R) Processor")) is None
    text = compare_machines(cpu("Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz"), cpu("AMD EPYC 7543 32-Core Processor"))
    assert "Intel(R) Xeon(R) Silver 4314" in text and "AMD EPYC 7543" in text


def test_pytest_benchmark_machine_info_is_understood():
    """Saved runs hold pytest-benchmark's machine_info with ours nested under MACHINE_INFO_KEY;
    older runs without it still name their CPU through py-cpuinfo's brand_raw."""
    saved = {"node": "ci-1", "cpu": {"brand_raw": "Intel(R) Xeon(R) Processor"},
             MACHINE_INFO_KEY: gpu("NVIDIA L4")}
    current = {"node": "ci-2", "cpu": {"brand_raw": "Intel(R) Xeon(R) Processor"},
               MACHINE_INFO_KEY: gpu("NVIDIA L40S")}
    assert "NVIDIA L4'" in compare_machines(saved, current) and "NVIDIA L40S" in compare_machines(saved, current)
    legacy = {"node": "old", "cpu": {"brand_raw": "AMD EPYC 7543 32-Core Processor"}}
    assert "AMD EPYC 7543" in compare_machines(legacy, cpu("Intel(R) Xeon(R) Processor"))
    assert compare_machines({"cpu": {"brand_raw": "X"}}, {"cpu": {"brand_raw": "X"}}) is None


@pytest.mark.parametrize("missing", [None, {}, {"node": "x"}])
def test_nothing_to_compare_gives_no_warning(missing):
    assert compare_machines(missing, gpu("NVIDIA H100")) is None


def test_describe():
    assert describe(gpu("NVIDIA H100")) == "GPU 'NVIDIA H100' (driver 550.54, CUDA 12.4)"
    assert describe(cpu("AMD EPYC")) == "CPU 'AMD EPYC' (2 logical cores)"
    assert describe({}) == "an unrecorded machine"
