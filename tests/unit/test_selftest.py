"""The sensitivity self-test (issue 12): the shipped damages against the user's own models,
baselines and tolerances; caught damage passes, a damage the gate cannot see fails by name."""
import json

import pytest

from accelgate.backends.damage import DAMAGES
from accelgate.config.load import build_config
from accelgate.selftest import damage_verdict, selftest_config, selftest_lines
from accelgate.verdict import Check, Verdict


def _verdict(outcome, checks=(), backend="damage-gain"):
    return Verdict(f"tiny-sd/{backend}/32x32", "tiny-sd", backend, (32, 32), outcome, checks=list(checks))


def test_the_selftest_matrix_is_the_reference_and_every_shipped_damage(tmp_path):
    config = selftest_config(build_config({"models": ["tiny-sd"], "backends": ["eager", "bf16"]}, None, tmp_path))
    assert [b.spec.name for b in config.backends] == ["eager", *DAMAGES]
    assert {"damage-noise", "damage-late-noise", "damage-skip-steps", "damage-gain", "damage-colour",
            "damage-text", "damage-no-text", "damage-no-guidance", "damage-full-strength",
            "damage-scheduler"} == set(DAMAGES)
    # stated magnitudes (the scheduler swap's is the class, named in its description)
    assert all(spec.description and (spec.options or spec.name == "damage-scheduler") for spec in DAMAGES.values())


def test_a_caught_damage_passes_naming_the_metrics_that_caught_it():
    caught = damage_verdict(_verdict("failed", [Check("ssim", 0.91, 0.995, True), Check("max_abs", 3, 64, False)]))
    assert caught.outcome == "passed"
    assert caught.reason == "caught damage-gain (the noise prediction times 1.05) by ssim 0.9100 (needs >= 0.9950)"


def test_a_damage_that_passes_fails_naming_model_damage_and_how_close_it_came():
    missed = damage_verdict(_verdict("passed", [Check("ssim", 0.9985, 0.995, True)]))
    assert missed.outcome == "failed"
    assert missed.reason.startswith("NOT CAUGHT: damage-gain (the noise prediction times 1.05) passes the gate "
                                    "on tiny-sd at 32x32 under this run's tolerances (ssim 0.9985 >= 0.9950)")


@pytest.mark.parametrize("outcome", ["error", "skipped", "oom"])
def test_what_was_not_judged_stays_what_it_was(outcome):
    assert damage_verdict(_verdict(outcome)).outcome == outcome
    unjudged = _verdict("failed")  # a missing baseline: no metric failed
    assert damage_verdict(unjudged) is unjudged


def test_the_summary_says_per_model_what_was_caught_with_which_metric_and_what_was_missed():
    def case(backend, outcome, reason, failing=()):
        return {"model": "tiny-sd", "backend": backend, "resolution": [32, 32], "outcome": outcome, "reason": reason,
                "metrics": {m: {"passed": m not in failing} for m in ("ssim", "color_shift")}}

    lines = selftest_lines([case("eager", "passed", ""), case("damage-colour", "passed", "caught", ["color_shift"]),
                            case("damage-gain", "failed", "NOT CAUGHT: ..."), case("damage-text", "error", "boom")])
    assert lines == ["self-test tiny-sd (32x32): caught damage-colour (color_shift); MISSED damage-gain; "
                     "not judged: damage-text error"]


def _selftest(pytester, config, report, *args):
    # in a subprocess: an in-process rerun would import torchao's custom ops a second time
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--accelgate-config={config}", "-m", "quality",
                              "--accelgate-selftest", f"--quality-report={report}", *args)


def test_selftest_run_on_the_users_own_model_and_tolerances(pytester, quality_project):
    """Default tolerances catch 10% denoiser noise on tiny-sd; tolerances loosened to their
    metrics' bounds see nothing, and the run fails naming the model and each damage."""
    strict = quality_project('models = ["tiny-sd"]\nbackends = ["eager", "bf16"]\nbaseline_dir = "baselines"\n'
                             '[model.tiny-sd]\nresolutions = ["32x32"]\n')
    result = _selftest(pytester, strict, "report", "--backends=eager,damage-noise,damage-colour")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*self-test tiny-sd (32x32): caught damage-noise (ssim*), damage-colour (*color_shift*)"])
    cases = {c["backend"]: c for c in json.loads((pytester.path / "report/results.json").read_text())["cases"]}
    assert cases["damage-noise"]["outcome"] == "passed" and cases["damage-noise"]["reason"].startswith("caught")

    blind = pytester.path / "accelgate.toml"
    blind.write_text(blind.read_text() + "[tolerances]\nssim = -1\npsnr = 0\nmax_abs = 255\ncolor_shift = 255\n")
    result = _selftest(pytester, blind, "blind-report", "--backends=eager,damage-noise,damage-colour")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*NOT CAUGHT: damage-noise (10% Gaussian noise on the denoiser output, every step) "
                                 "passes the gate on tiny-sd at 32x32*",
                                 "*self-test tiny-sd (32x32): caught nothing; MISSED damage-noise, damage-colour"])
