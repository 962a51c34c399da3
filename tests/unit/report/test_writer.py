"""The one report writer: merge by case id across runs that match, refuse those that do not,
write atomically with normal file modes, and render summary.md from results.json alone."""
import json
import os

import pytest

from accelgate.quality import report as quality_report  # noqa: F401  (registers the quality section)
from accelgate.report.writer import (
    ReportConflict, atomic_write_text, check_mergeable, merge_part, summary_markdown, write_report,
)
from accelgate.speed import report as speed_report  # noqa: F401  (registers the speed section)


def _run(run_id="r1", **overrides):
    meta = {"id": run_id, "started": "2026-12-02T10:00:00+00:00", "device": "cpu", "device_class": "cpu",
            "config": "/repo/pyproject.toml", "config_sha256": "abc", "reference": "eager",
            "versions": {"accelgate": "0.1.0", "torch": "2.15.0", "diffusers": "0.42.1", "transformers": "5.23.0"}}
    meta.update(overrides)
    return meta


def _case(case_id, outcome="passed"):
    model, backend, resolution = case_id.split("/")
    width, height = (int(v) for v in resolution.split("x"))
    return {"id": case_id, "model": model, "backend": backend, "resolution": [width, height], "outcome": outcome,
            "reason": "" if outcome == "passed" else "quality dropped", "reference": backend == "eager",
            "metrics": {"ssim": {"value": 1.0, "threshold": 0.995, "op": ">=", "passed": outcome == "passed"}},
            "images": [], "timing": {"generate_s": 0.1}}


def _quality(*ids, outcome="passed"):
    return {"cases": [_case(i, outcome) for i in ids], "not_applicable": [], "model_hashes": {"tiny-dit": "h"},
            "stale_models": {}, "written_baselines": [], "backend_order": ["eager", "bf16"]}


def test_a_second_run_merges_by_case_id_and_each_case_keeps_its_run(tmp_path):
    write_report(tmp_path, _run("r1"), {"quality": _quality("tiny-dit/eager/32x32", "tiny-dit/bf16/32x32")})
    results = write_report(tmp_path, _run("r2"), {"quality": _quality("tiny-dit/bf16/32x32", outcome="failed")})
    cases = {c["id"]: c for c in results["cases"]}
    assert set(cases) == {"tiny-dit/eager/32x32", "tiny-dit/bf16/32x32"}
    assert cases["tiny-dit/eager/32x32"]["run_id"] == "r1"
    assert cases["tiny-dit/bf16/32x32"]["run_id"] == "r2" and cases["tiny-dit/bf16/32x32"]["outcome"] == "failed"
    assert [r["id"] for r in results["runs"]] == ["r1", "r2"] and results["run"]["id"] == "r2"
    assert results["summary"] == {"passed": 1, "failed": 1}
    summary = (tmp_path / "summary.md").read_text()
    assert "This report merges 2 runs" in summary and "`r1`: 2 case(s)" in summary and "`r2`: 1 case(s)" in summary


@pytest.mark.parametrize("field, value", [("device_class", "cuda-nvidia-h100-80gb-hbm3"), ("config_sha256", "def"),
                                          ("versions", {"accelgate": "0.1.0", "torch": "2.16.0",
                                                        "diffusers": "0.42.1", "transformers": "5.23.0"})])
def test_a_run_with_other_metadata_is_refused_naming_the_field(tmp_path, field, value):
    write_report(tmp_path, _run("r1"), {"quality": _quality("tiny-dit/eager/32x32")})
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(ReportConflict, match=f"another {field}") as info:
        check_mergeable(tmp_path, _run("r2", **{field: value}))
    if field == "versions":
        assert "torch: '2.15.0' there, '2.16.0' here" in str(info.value)
    assert (tmp_path / "results.json").read_text() == before  # nothing lost


def test_a_report_of_an_older_format_is_refused(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"cases": []}))
    with pytest.raises(ReportConflict, match="another accelgate report format"):
        check_mergeable(tmp_path, _run())


def test_summary_md_is_rendered_from_results_json_alone(tmp_path):
    results = write_report(tmp_path, _run(), {"quality": _quality("tiny-dit/eager/32x32", "tiny-dit/bf16/32x32")})
    assert summary_markdown(json.loads((tmp_path / "results.json").read_text())) == (tmp_path / "summary.md").read_text()
    assert "## tiny-dit @ 32x32" in summary_markdown(results)


def test_the_report_says_which_accelgate_judged(tmp_path):
    # results.json records every version of the run; summary.md's header names them
    results = write_report(tmp_path, _run("r1"), {"quality": _quality("tiny-dit/eager/32x32")})
    assert results["run"]["versions"]["accelgate"] == "0.1.0"
    assert "Versions: accelgate `0.1.0`, torch `2.15.0`, diffusers `0.42.1`" in (tmp_path / "summary.md").read_text()


def test_files_are_written_with_the_normal_mode_not_mkstemps(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "x.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left


def test_parts_merge_lists_by_id_and_mappings_by_key():
    old = {"cases": [{"id": "a", "v": 1}, {"id": "b", "v": 1}], "model_hashes": {"m": "1"}, "reference": "eager"}
    new = {"cases": [{"id": "b", "v": 2}, {"id": "c", "v": 2}], "model_hashes": {"n": "2"}, "reference": "eager"}
    merged = merge_part(old, new)
    assert merged["cases"] == [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "c", "v": 2}]
    assert merged["model_hashes"] == {"m": "1", "n": "2"}
