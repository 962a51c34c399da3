"""The distribution gate as a library: config schema, the gate's decisions on known inputs, and
one tiny pipeline end to end (random-weight metric models) without pytest's plugin in the way.

The gate's promises, each with a test: the reference passes against itself; strong damage
fails; a higher score never fails; an inconclusive test passes with a warning by default and
fails under --strict-metrics; one unlucky prompt out of five is no false alarm; the CI narrows
as prompts grow; too few images for FID/KID/IS is said, not scored; missing weights skip with
the file's name (fail under --strict-metrics); corrupt weights fail.
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from accelgate.config.distribution import check_names, tolerance_for, validate_distribution_table
from accelgate.config.schema import ConfigError, parse_prompt_limit
from accelgate.distribution.measure import Measured
from accelgate.distribution.run import DistributionRun
from accelgate.matrix import Case
from accelgate.models.registry import ModelSpec
from accelgate.prompts.sets import PromptItem

REPO = Path(__file__).resolve().parents[3]


def settings(**table):
    return validate_distribution_table(table, "accelgate.toml, [distribution]")


# ------------------------------------------------------------------------------- schema
def test_defaults_are_filled_and_prompt_sets_parsed():
    s = settings(prompt_sets={"sd15": "hpdv2", "kolors": "coco30k:/data/coco"}, tolerances={"hps": 0.3})
    assert s["metric_models"] == "real" and s["hps_version"] == "v2.1" and s["confidence"] == 0.95
    assert s["prompt_sets"] == {"sd15": {"name": "hpdv2", "source": None},
                                "kolors": {"name": "coco30k", "source": "/data/coco"}}
    assert s["tolerances"]["hps"] == 0.3 and s["tolerances"]["clip_score"] == 0.5 and s["tolerances"]["ssim"] is None
    assert s["random_tolerances"]["lpips"] == 0.005 and s["cpu_run"]["prompt_limit"] == 4


@pytest.mark.parametrize("table, message", [
    ({"metric_model": "real"}, "unknown key 'metric_model' (did you mean 'metric_models'?); allowed keys:"),
    ({"metric_models": "fake"}, "metric_models = 'fake'; allowed: real, random"),
    ({"tolerances": {"hsp": 1}}, "[distribution].tolerances: unknown key 'hsp'"),
    ({"tolerances": {"fid": -1}}, "tolerances are sizes (>= 0)"),
    ({"prompt_sets": {"sd15": "hpd"}}, "unknown prompt set 'hpd'; embedded sets:"),
    ({"loosen": [{"backend": "bf16", "hps": 1.0}]}, "a loosening needs backend"),
    ({"cpu_run": {"prompt_limit": 0}}, "cpu_run: prompt_limit must be >= 1"),
    ({"confidence": 1.5}, "confidence must be in (0, 1)"),
    ({"kid_subset_size": 1}, "kid_subset_size must be >= 2"),
])
def test_schema_errors_name_the_table_and_the_fix(table, message):
    with pytest.raises(ConfigError) as error:
        settings(**table)
    assert "accelgate.toml, [distribution]" in str(error.value) and message in str(error.value)


def test_names_are_checked_against_the_matrix():
    s = settings(cpu_run={"models": ["tiny-sd", "tiny-foo"], "backends": ["eager"]})
    with pytest.raises(ConfigError, match="cpu_run.models: 'tiny-foo' not in the matrix; known: tiny-sd, tiny-dit"):
        check_names(s, ["tiny-sd", "tiny-dit"], ["eager"], "where")


def test_prompt_limit_parse():
    assert parse_prompt_limit("12") == 12
    for bad in ("0", "-3", "ten"):
        with pytest.raises(ValueError, match="--prompt-limit"):
            parse_prompt_limit(bad)


def test_tolerance_precedence_and_random_weight_scale():
    s = settings(tolerances={"hps": 0.4}, loosen=[
        {"backend": "deepcache", "hps": 2.0, "reason": "reuses features"},
        {"backend": "deepcache", "model": "sd15", "hps": 3.0, "reason": "measured on sd15"}])
    assert tolerance_for(s, "hps", "sd15", "deepcache") == (3.0, "measured on sd15")
    assert tolerance_for(s, "hps", "sdxl", "deepcache") == (2.0, "reuses features")
    assert tolerance_for(s, "hps", "sdxl", "bf16") == (0.4, "")
    assert tolerance_for(s, "hps", "sd15", "deepcache", random_weights=True) == (1.0, "")  # own scale, no loosening
    assert tolerance_for(s, "kid", "sd15", "bf16", random_weights=True) == (None, "")  # reported only


# ------------------------------------------------------------------------------- the gate
def _run(strict=False, **table):
    backends = {name: SimpleNamespace(spec=SimpleNamespace(name=name)) for name in ("eager", "fast")}
    config = SimpleNamespace(reference="eager", backend=backends.__getitem__, models=(), backends=())
    return DistributionRun(SimpleNamespace(config=config, device="cpu"), settings(**table), strict=strict)


def _measured(hps, features=None):
    items = [SimpleNamespace(label=lambda i=i: f"prompt {i}", style="") for i in range(len(hps))]
    return Measured([], items, 0.0, {"hps": np.asarray(hps, dtype=float)}, features)


CASE = SimpleNamespace(model=SimpleNamespace(id="m"), backend=SimpleNamespace(name="fast"))


def _hps_check(candidate, reference, strict=False):
    run = _run(strict)
    checks, notes, _ = run.gate(CASE, ["hps"], _measured(candidate), _measured(reference))
    return checks[0], notes


def test_reference_against_itself_passes_exactly():
    values = np.linspace(25, 32, 12)
    check, notes = _hps_check(values, values)
    assert check.passed and check.value == 0 and check.ci == (0, 0) and not notes


def test_a_real_drop_fails_and_names_the_worst_prompts():
    rng = np.random.default_rng(0)
    reference = rng.normal(30, 2, 60)
    check, _ = _hps_check(reference - 1.5 + rng.normal(0, 0.3, 60), reference)  # seed 001's DeepCache drop
    assert not check.passed and check.ci[1] < -0.5 and "non-inferiority fail" in check.note
    assert "worst prompts: 'prompt" in check.note


def test_a_higher_score_never_fails():
    reference = np.linspace(25, 32, 12)
    check, _ = _hps_check(reference + 5, reference)
    assert check.passed and check.value == pytest.approx(5)


def test_one_unlucky_prompt_of_five_is_no_false_alarm_but_strict_mode_wants_proof():
    reference = np.array([30.0, 28.0, 31.0, 29.0, 30.5])
    candidate = reference + np.array([0.1, -0.1, 0.0, 0.1, -1.9])  # mean -0.36, within the 0.5 tolerance
    check, notes = _hps_check(candidate, reference)
    assert check.passed and "inconclusive" in check.note and "prompts would settle it" in notes[0]
    strict, notes = _hps_check(candidate, reference, strict=True)
    assert not strict.passed and not notes and strict.value == pytest.approx(strict.ci[0])  # gated on the CI's low end
    assert "--strict-metrics" in strict.note


def test_an_inconclusive_mean_beyond_the_tolerance_fails():
    reference = np.array([30.0, 28.0, 31.0, 29.0, 30.5])
    check, _ = _hps_check(reference + np.array([-2.0, 0.5, -1.5, 0.4, -0.9]), reference)  # mean -0.7
    assert not check.passed and "inconclusive" in check.note


def test_the_interval_narrows_as_prompts_grow():
    rng = np.random.default_rng(1)
    reference = rng.normal(30, 2, 400)
    candidate = reference + rng.normal(-0.1, 0.8, 400)
    widths = []
    for n in (5, 20, 80, 320):
        check, _ = _hps_check(candidate[:n], reference[:n])
        widths.append(check.ci[1] - check.ci[0])
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0] / 5


def test_set_metrics_gate_the_delta_in_the_right_direction():
    from accelgate.metrics.set_stats import DistributionResult

    def result(metric, value):
        return DistributionResult(metric, value, 0.5, 200, None, "test")

    run = _run()
    for name, reference, candidate, passed in (("is", 37.5, 36.0, False), ("is", 37.5, 40.0, True),
                                               ("fid_real", 25.0, 25.5, True), ("fid_real", 25.0, 26.5, False),
                                               ("fid_real", 25.0, 20.0, True)):
        cand, ref = _measured([1.0]), _measured([1.0])
        cand.own[name], ref.own[name] = result(name, candidate), result(name, reference)
        check = run.gate(CASE, [name], cand, ref)[0][0]
        assert check.passed is passed and check.value == pytest.approx(candidate - reference), (name, candidate)
        assert check.threshold == (-1.0 if name == "is" else 1.0)


def test_too_few_images_for_set_metrics_is_said_not_scored():
    from accelgate.metrics.features import ImageFeatures

    one = ImageFeatures(pool=__import__("torch").ones(1, 8, dtype=__import__("torch").float64), logits=None,
                        image_size=(32, 32), extractor="test")
    for strict in (False, True):
        run = _run(strict)
        checks, notes, results = run.gate(CASE, ["fid", "kid"], _measured([1.0], one), _measured([1.0], one))
        for check in checks:
            assert np.isnan(check.value) and "not computed" in check.note
            assert check.passed is (not strict)  # a warning by default, a failure under --strict-metrics
        assert len(notes) == (0 if strict else 2)
    assert "a covariance needs at least 2" in checks[0].note and "subset_size" in checks[1].note


# ------------------------------------------------------------------------------- end to end
class TinyRun:
    """The slice of QualityRun the distribution run uses, on one tiny SD built offline."""

    def __init__(self, backends: dict):
        self.device = "cpu"
        choices = {name: SimpleNamespace(spec=spec) for name, spec in backends.items()}
        self.config = SimpleNamespace(reference="eager", backend=choices.__getitem__, models=(),
                                      backends=tuple(choices.values()))

    def skip_reason(self, case):
        return None

    def load(self, case):
        return copy.deepcopy(_tiny_sd())  # backends hook into the pipeline: a fresh one per case

    def cleanup(self):
        pass


@functools.lru_cache(maxsize=1)
def _tiny_sd():
    from accelgate.models.tiny import build_tiny_sd

    return build_tiny_sd()


@pytest.fixture
def backends(example_backends):
    import accelgate.backends  # noqa: F401  (registers the built-in backends)
    from accelgate.backends.registry import get_backend
    from accelgate.backends.user import user_backend

    return {"eager": get_backend("eager"),
            "identity": user_backend("identity", "fixtures.example_backends:identity"),
            "noise": user_backend("noise", "fixtures.example_backends:denoiser_noise", {"sigma": 1.0})}


TINY = ModelSpec(id="tiny", task="text-to-image", pipeline_class="StableDiffusionPipeline", denoiser="unet",
                 source="tiny", resolutions=((32, 32),), steps=4, guidance_scale=1.0, prompt_set="diffusers-guide",
                 builder="accelgate.models.tiny:build_tiny_sd")


def _case(backends, name):
    return Case(TINY, backends[name], (32, 32), name == "eager")


def test_noise_fails_while_the_reference_and_a_no_op_pass(backends):
    run = DistributionRun(TinyRun(backends), settings(metric_models="random"), prompt_limit=4)
    results = {name: run.evaluate("prompt-set", _case(backends, name)) for name in ("eager", "identity", "noise")}
    assert results["eager"].verdict.passed and results["identity"].verdict.passed, results["identity"].verdict.message
    noisy = results["noise"].verdict
    assert noisy.outcome == "failed" and noisy.kind == "distribution"
    failed = {c.metric for c in noisy.checks if not c.passed}
    assert {"lpips", "fid"} <= failed, noisy.message
    assert noisy.reason.startswith("distribution gate failed vs the reference backend 'eager' on 4 prompts")
    summary = results["noise"].summaries
    assert summary["ssim"].value < 0.9 and results["noise"].reference["hps"].n == 4
    assert set(summary) == {"fid", "is", "clip_score", "aesthetic", "hps", "ssim", "kid", "lpips"}
    assert results["noise"].random_weights and all("random-weight" in label or "random" in label.lower()
                                                   for label in results["noise"].metric_models.values())


def test_one_prompt_is_too_few_for_fid_kid_is(backends):
    # --strict-metrics does not apply to random-weight scores (they prove nothing either way);
    # its effect on real ones is test_too_few_images_for_set_metrics_is_said_not_scored.
    for strict in (False, True):
        run = DistributionRun(TinyRun(backends), settings(metric_models="random", metrics=["fid", "kid", "is"]),
                              strict=strict, prompt_limit=1)
        result = run.evaluate("prompt-set", _case(backends, "identity"))
        notes = {c.metric: c.note for c in result.verdict.checks}
        assert "a covariance needs at least 2" in notes["fid"] and "subset_size" in notes["kid"]
        assert "each split needs at least 2 images" in notes["is"]
        assert result.verdict.passed and len(result.warnings) == 3
        assert result.summaries["fid"].value is None


def test_missing_weights_skip_naming_the_file_or_fail_when_strict(backends, empty_caches):
    for strict, outcome in ((False, "skipped"), (True, "failed")):
        run = DistributionRun(TinyRun(backends), settings(metrics=["fid"]), strict=strict)
        verdict = run.evaluate("prompt-set", _case(backends, "noise")).verdict
        assert verdict.outcome == outcome
        assert "weights-inception-2015-12-05-6726825d.pth" in verdict.reason
        assert "ACCELGATE_WEIGHTS_DIR" in verdict.reason
    assert "--strict-metrics" in verdict.reason


def test_corrupt_weights_fail(backends, empty_caches, tmp_path):
    import torch

    from accelgate.metrics.aesthetic import AestheticHead

    broken = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(AestheticHead().state_dict(), broken)
    broken.write_bytes(broken.read_bytes()[:5000])  # a truncated download
    run = DistributionRun(TinyRun(backends), settings(metrics=["aesthetic"], weights={"aesthetic": str(broken)}))
    verdict = run.evaluate("prompt-set", _case(backends, "noise")).verdict
    assert verdict.outcome == "failed" and "is not a readable torch checkpoint" in verdict.reason


def test_prompt_files_wrong_schema_fails_and_a_missing_explicit_path_fails(backends, tmp_path):
    bench = tmp_path / "benchmark"
    bench.mkdir()
    for style in ("anime", "concept-art", "paintings", "photo"):
        (bench / f"{style}.json").write_text(json.dumps({"prompts": ["a cat"]}))
    run = DistributionRun(TinyRun(backends), settings(metric_models="random", prompt_sets={"tiny": f"hpdv2:{bench}"}))
    verdict = run.evaluate("prompt-set", _case(backends, "noise")).verdict
    assert verdict.outcome == "failed" and "expected a JSON list of prompt strings" in verdict.reason
    run = DistributionRun(TinyRun(backends), settings(metric_models="random",
                                                      prompt_sets={"tiny": f"coco30k:{tmp_path / 'nothing'}"}))
    verdict = run.evaluate("prompt-set", _case(backends, "noise")).verdict
    # issue 9: a path given explicitly that does not exist fails (it skipped, and the run passed)
    assert verdict.outcome == "failed" and "does not exist" in verdict.reason
    assert "names this path explicitly (distribution.prompt_sets.tiny)" in verdict.reason


def test_non_finite_features_are_the_case_error_not_a_number(backends, monkeypatch):
    from accelgate.metrics.offline import TinyFeatureExtractor

    def broken(self, batch):
        pool, logits = self.module(batch)
        return pool * float("nan"), logits

    monkeypatch.setattr(TinyFeatureExtractor, "_forward", broken)
    run = DistributionRun(TinyRun(backends), settings(metric_models="random", metrics=["fid"]), prompt_limit=2)
    verdict = run.evaluate("prompt-set", _case(backends, "identity")).verdict
    assert verdict.outcome == "error" and "non-finite pool features" in verdict.reason
    assert "the reference backend 'eager' could not make the reference set" in verdict.reason
    again = run.evaluate("prompt-set", _case(backends, "noise")).verdict  # cached: not recomputed, still said
    assert again.outcome == "error" and "non-finite pool features" in again.reason


def test_a_models_own_prompts_are_its_distribution_set_unless_prompt_sets_names_one():
    own = ModelSpec(id="mine", task="text-to-image", pipeline_class="StableDiffusionPipeline", denoiser="unet",
                    source="tiny", resolutions=((32, 32),), steps=4, guidance_scale=1.0,
                    prompt_set="[model.mine] prompts", builder="accelgate.models.tiny:build_tiny_sd",
                    prompts=tuple(PromptItem(prompt=p) for p in ("a red cube", "a lighthouse", "a bowl of soup")))
    items, described, _ = _run(prompt_limit=2).prompt_items("quality", own)
    assert [i.prompt for i in items] == ["a red cube", "a lighthouse"]
    assert described == "[model.mine] prompts, 2 of 3 prompts"
    items, described, _ = _run(prompt_sets={"mine": "sd2"}).prompt_items("quality", own)
    assert described.startswith("sd2, 1 of 1") and "galaxy bottle" in items[0].prompt
