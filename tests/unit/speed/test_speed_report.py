"""The seed-004 speed table from synthetic saved pytest-benchmark runs.

The numbers are seed 004's own (RTX 3090, SD2, 20 steps), so the expected percentages are the
ones the seed printed: OneDiff 15.93 it/s vs 10.45 is +52.4%, 1.35 s vs 2.10 s is -35.7%.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from accelgate.machine import MACHINE_INFO_KEY
from accelgate.speed.report import (
    build_speed_table, cases_from_runs, find_runs, load_run, resolution_label, speed_report,
)

GiB = 2**30
RTX3090 = {"device_class": "cuda", "gpu_name": "NVIDIA GeForce RTX 3090", "driver": "550.54", "cuda": "12.4"}
H100 = {"device_class": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "driver": "560.35", "cuda": "12.6"}


def bench(model, backend, resolution, **extra):
    """One benchmark entry shaped like pytest-benchmark 5's saved JSON."""
    return {
        "group": None, "name": f"test_speed[{model}-{backend}-{resolution}]",
        "fullname": f"tests/test_speed.py::test_speed[{model}-{backend}-{resolution}]",
        "params": None, "param": None, "options": {"disable_gc": False, "timer": "perf_counter"},
        "stats": {"min": 1.0, "max": 1.0, "mean": 1.0, "median": 1.0, "rounds": 1, "iterations": 1},
        "extra_info": {"model": model, "backend": backend, "resolution": resolution,
                       "peak_mem_api": "torch.cuda.max_memory_allocated", **extra},
    }


def write_run(storage: Path, number: int, when: str, benchmarks, gpu=RTX3090, machine_id="Linux-CPython-3.11-64bit"):
    folder = storage / machine_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{number:04d}_abc123_{when[:10].replace('-', '')}_uncommitted-changes.json"
    path.write_text(json.dumps({
        "machine_info": {"node": "ci", "machine": "x86_64", "cpu": {"brand_raw": "AMD EPYC 7543"},
                         MACHINE_INFO_KEY: gpu},
        "commit_info": {"id": "abc123", "dirty": True},
        "benchmarks": benchmarks, "datetime": when, "version": "5.3.1",
    }))
    return path


SEED = [
    bench("sd2", "eager", "768x768", it_per_s=10.45, e2e_s=2.10, peak_mem_bytes=3.767 * GiB),
    bench("sd2", "onediff", "768x768", it_per_s=15.93, e2e_s=1.35, peak_mem_bytes=3.558 * GiB,
          cold_warmup_s=301.54, warm_warmup_s=113.04, recompiles=0),
    bench("sd2", "eager", [512, 512], it_per_s=22.84, e2e_s=0.97, peak_mem_bytes=3.025 * GiB),
    bench("sd2", "onediff", "512*512", it_per_s=44.84, e2e_s=0.49, peak_mem_bytes=3.018 * GiB,
          cold_warmup_s=222.18, warm_warmup_s=44.94, recompiles=1),
]


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / ".benchmarks"
    write_run(root, 1, "2026-11-20T10:00:00+00:00", SEED)
    return root


def test_percent_change_matches_the_seed(storage):
    table = speed_report(storage)
    cols = {(c.backend, c.resolution): c for c in table.columns("sd2")}
    onediff = cols[("onediff", "768x768")]
    assert round(table.change_pct(onediff, "it_per_s"), 1) == 52.4
    assert round(table.change_pct(onediff, "e2e_s"), 1) == -35.7
    small = cols[("onediff", "512x512")]
    assert round(table.change_pct(small, "it_per_s"), 1) == 96.3
    assert round(table.change_pct(small, "e2e_s"), 1) == -49.5
    md = table.to_markdown()
    assert "| Iteration speed | 10.45 it/s | 15.93 it/s (+52.4%) | 22.84 it/s | 44.84 it/s (+96.3%) |" in md
    assert "| E2E time | 2.10 s | 1.35 s (-35.7%) | 0.970 s | 0.490 s (-49.5%) |" in md
    assert "| Max Mem Used | 3.767 GiB | 3.558 GiB (-5.5%) |" in md


def test_columns_are_resolution_then_reference_first(storage):
    table = speed_report(storage)
    assert [(c.backend, c.resolution) for c in table.columns("sd2")] == [
        ("eager", "768x768"), ("onediff", "768x768"), ("eager", "512x512"), ("onediff", "512x512")]
    assert "| Metric | eager, 768x768 | onediff, 768x768 | eager, 512x512 | onediff, 512x512 |" in table.to_markdown()


def test_missing_values_are_dashes_and_nulls_never_zero(storage):
    table = speed_report(storage)
    md = table.to_markdown()
    assert "| Warmup with Compilation time | - | 301.5 s | - | 222.2 s |" in md
    assert "| Warmup with Cache time | - | 113.0 s | - | 44.94 s |" in md
    data = table.to_dict()
    eager = data["models"][0]["columns"][0]
    assert eager["backend"] == "eager" and eager["reference"] is True
    assert eager["values"]["cold_warmup_s"] is None and eager["change_pct"]["it_per_s"] is None
    json.dumps(data, allow_nan=False)


def test_no_reference_means_no_percent(tmp_path):
    root = tmp_path / ".benchmarks"
    write_run(root, 1, "2026-11-20T10:00:00+00:00", [
        bench("pixart", "compile", "1024x1024", it_per_s=3.0, e2e_s=float("nan")),
        bench("pixart", "eager", "512x512", it_per_s=0.0)])
    table = speed_report(root)
    col = {c.resolution: c for c in table.columns("pixart")}["1024x1024"]
    assert table.change_pct(col, "it_per_s") is None
    assert table.cell(col, table.rows[1]) == "-"  # NaN is "not measured"
    eager = {c.resolution: c for c in table.columns("pixart")}["512x512"]
    assert table.cell(eager, table.rows[0]) == "0.00 it/s"  # a real zero stays a zero
    assert "No `eager` column at the same resolution and hardware: no change in % for compile." in table.to_markdown()


def test_recompiles_row_only_when_recorded(storage, tmp_path):
    md = speed_report(storage).to_markdown()
    assert "| Recompiles | - | 0 | - | 1 |" in md
    root = tmp_path / "other"
    write_run(root, 1, "2026-11-20T10:00:00+00:00", [bench("sd", "eager", "64x64", it_per_s=5.0)])
    assert "Recompiles" not in speed_report(root).to_markdown()


def test_latest_run_by_default_newest_wins_when_merging(storage):
    write_run(storage, 2, "2026-11-21T10:00:00+00:00", [
        bench("sd2", "onediff", "768x768", it_per_s=14.0, e2e_s=1.40),
        bench("sd2", "eager", "768x768", it_per_s=10.0, e2e_s=2.0)])
    latest = speed_report(storage)
    assert {(c.backend, c.resolution) for c in latest.columns("sd2")} == {("onediff", "768x768"), ("eager", "768x768")}
    merged = speed_report(find_runs(storage, latest_only=False))
    cols = {(c.backend, c.resolution): c for c in merged.columns("sd2")}
    assert len(cols) == 4
    assert cols[("onediff", "768x768")].values["it_per_s"] == 14.0  # newer run replaced it
    assert cols[("onediff", "768x768")].run.startswith("0002_")
    assert cols[("onediff", "512x512")].values["it_per_s"] == 44.84  # only in the older run


def test_runs_from_two_gpus_warn_naming_both(storage):
    write_run(storage, 2, "2026-11-21T10:00:00+00:00", [bench("sd2", "compile", "768x768", it_per_s=30.0)],
              gpu=H100, machine_id="Linux-CPython-3.11-64bit-h100")
    table = speed_report(find_runs(storage, latest_only=False))
    md = table.to_markdown()
    assert "MACHINE MISMATCH" in md and "NVIDIA GeForce RTX 3090" in md and "NVIDIA H100 80GB HBM3" in md
    assert table.to_dict()["warnings"]
    # columns name their GPU, like the seed's, and no % is taken against another GPU's eager
    h100 = [c for c in table.columns("sd2") if c.hardware == "NVIDIA H100 80GB HBM3"]
    assert len(h100) == 1 and table.change_pct(h100[0], "it_per_s") is None
    assert "| compile, 768x768, NVIDIA H100 80GB HBM3 |" in md
    assert "30.00 it/s |" in md and "(+187.1%)" not in md


def test_current_machine_differing_from_the_saved_runs_warns(storage):
    table = speed_report(storage, current_machine=H100)
    assert any("another machine than this one" in w and "H100" in w for w in table.warnings)
    assert not speed_report(storage, current_machine=RTX3090).warnings


def test_mixed_memory_apis_are_flagged(tmp_path):
    root = tmp_path / ".benchmarks"
    write_run(root, 1, "2026-11-20T10:00:00+00:00", [
        bench("sd", "eager", "64x64", peak_mem_bytes=10.0),
        {**bench("sd", "x", "64x64", peak_mem_bytes=5.0),
         "extra_info": {"model": "sd", "backend": "x", "resolution": "64x64", "peak_mem_api": "oneflow"}}])
    assert any("not comparable" in w for w in speed_report(root).warnings)


def test_writes_markdown_to_the_report_dir(storage, tmp_path):
    table = speed_report(storage, report_dir=tmp_path / "report")
    assert (tmp_path / "report" / "speed.md").read_text() == table.to_markdown()


def test_other_benchmarks_are_ignored_and_empty_storage_is_explained(tmp_path):
    root = tmp_path / ".benchmarks"
    path = write_run(root, 1, "2026-11-20T10:00:00+00:00", [
        {**bench("sd", "eager", "64x64"), "extra_info": {"ssim": 0.99}}, bench("sd", "eager", "64x64", e2e_s=0.2)])
    assert len(cases_from_runs([load_run(path)])) == 1
    with pytest.raises(FileNotFoundError, match="--benchmark-autosave"):
        find_runs(tmp_path / "nothing-here")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a pytest-benchmark saved run"):
        load_run(bad)


@pytest.mark.parametrize("value, label", [
    ("512x512", "512x512"), ("768*768", "768x768"), ([1024, 576], "1024x576"), ((64, 64), "64x64"),
    (512, "512x512"), ("512", "512x512"), ({"height": 32, "width": 48}, "32x48"), (None, None),
])
def test_resolution_labels(value, label):
    assert resolution_label(value) == label


def test_table_from_cases_directly():
    runs = [json.loads(json.dumps({"datetime": "x", "benchmarks": SEED[:2], "_path": "0001_a.json"}))]
    table = build_speed_table(cases_from_runs(runs), reference="eager")
    assert table.machines == ["an unrecorded machine"]
    assert "Change in % is against `eager`" in table.to_markdown()
