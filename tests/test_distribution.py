"""Distribution-level quality: are an accelerated backend's images as *good* as the reference
backend's over a prompt set (FID, KID, IS, CLIP score, aesthetic, HPS v2, CLIP directional
similarity, LPIPS; SSIM reported), gated on deltas with bootstrap confidence intervals?

Which models, backends, prompt sets and tolerances: `[tool.accelgate.distribution]` in the
config; this module only asks the library for each case's verdict and asserts it.
"""
import pytest

pytestmark = pytest.mark.quality


@pytest.mark.slow
def test_distribution(accelgate_distribution, accelgate_distribution_case):
    """The prompt-set run: real metric models by default, real models on a GPU."""
    verdict = accelgate_distribution.verdict(accelgate_distribution_case)
    assert verdict.passed, verdict.message


def test_distribution_metrics_cpu(accelgate_distribution, accelgate_metrics_case):
    """Every metric and the gate on the tiny pipelines with random-weight metric models (CI)."""
    verdict = accelgate_distribution.verdict(accelgate_metrics_case)
    assert verdict.passed, verdict.message
