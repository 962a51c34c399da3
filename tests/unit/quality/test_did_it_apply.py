"""Two-sided verdicts (issue 10, item 3): a backend that declares it changes the numerics but
whose float images equal the reference's bit for bit did not apply. A finding (a warning) by
default, a failure with --accelgate-strict-apply; silent where the baseline has no fingerprints."""
import json
import os
from pathlib import Path

import pytest

from accelgate.config.load import build_config
from accelgate.quality.run import QualityRun
from accelgate.session import Session


def _config(tmp_path):
    raw = {"models": ["tiny-dit"], "model": {"tiny-dit": {"resolutions": ["32x32"]}},
           "backends": ["eager", "fallback", "bf16"],
           # a "compile" that silently runs eager: what the check is for
           "backend": {"fallback": {"factory": "fixtures.example_backends:identity", "changes_numerics": True}}}
    return build_config(raw, None, tmp_path)


@pytest.fixture
def baselines(tmp_path):
    session = Session(_config(tmp_path), device="cpu")
    reference = next(c for c in session.matrix.cases if c.reference)
    assert QualityRun(session, tmp_path / "baselines", regen=True).evaluate(reference).passed
    return tmp_path / "baselines"


def _verdicts(tmp_path, baselines, **run_options):
    session = Session(_config(tmp_path), device="cpu")
    run = QualityRun(session, baselines, **run_options)
    return {c.backend.name: run.evaluate(c) for c in session.matrix.cases}


def test_the_regen_stores_a_fingerprint_of_every_float_image(baselines):
    manifest = json.loads(next(baselines.rglob("manifest.json")).read_text())
    assert all(len(entry["float_sha256"]) == 64 for entry in manifest["images"])


def test_a_declared_numeric_change_that_changed_nothing_is_a_finding_and_strict_fails_it(tmp_path, baselines):
    verdicts = _verdicts(tmp_path, baselines)
    fallback = verdicts["fallback"]
    assert fallback.passed and len(fallback.findings) == 1
    assert fallback.findings[0].startswith("did it apply? fallback declares it changes the numerics, but its float "
                                           "images (before 8-bit rounding) equal the reference's bit for bit (2 of 2)")
    assert "finding: did it apply?" in fallback.message and fallback.as_json()["findings"] == fallback.findings
    assert not verdicts["eager"].findings and not verdicts["bf16"].findings  # the reference; a real change
    strict = _verdicts(tmp_path, baselines, strict_apply=True)["fallback"]
    assert strict.outcome == "failed" and "did it apply? fallback" in strict.reason


def test_without_fingerprints_in_the_baseline_the_check_is_silent(tmp_path, baselines):
    path = next(baselines.rglob("manifest.json"))
    manifest = json.loads(path.read_text())
    for entry in manifest["images"]:
        del entry["float_sha256"]
    path.write_text(json.dumps(manifest))
    assert not _verdicts(tmp_path, baselines, strict_apply=True)["fallback"].findings


def test_the_pytest_run_warns_and_lists_the_finding(pytester, quality_project, monkeypatch):
    repo = Path(__file__).resolve().parents[3]  # fixtures.example_backends, for the child pytest
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    config = quality_project(
        'models = ["tiny-dit"]\nbackends = ["eager", "fallback"]\n[model.tiny-dit]\nresolutions = ["32x32"]\n'
        '[backend.fallback]\nfactory = "fixtures.example_backends:identity"\nchanges_numerics = true\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--accelgate-config={config}", "-m", "quality")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*ApplyFinding: tiny-dit/fallback/32x32: did it apply? fallback declares*",
                                 "FINDING tiny-dit/fallback/32x32: did it apply?*"])
    strict = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--accelgate-config={config}", "-m", "quality",
                                           "--accelgate-strict-apply")
    strict.assert_outcomes(passed=1, failed=1)
