"""The paired non-inferiority gate and the delta gate."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from accelgate.metrics.offline import tiny_clip
from accelgate.metrics.stats import delta_gate, mean_with_ci, paired_noninferiority
from accelgate.prompts.sets import load_sample_image


def hps_like(n: int, seed: int = 0) -> np.ndarray:
    """Per-prompt scores with HPS v2's spread: prompts differ far more than backends do."""
    return np.random.default_rng(seed).normal(0.27, 0.02, size=n)


def test_the_reference_against_itself_passes_exactly():
    ref = hps_like(40)
    result = paired_noninferiority(ref, ref.copy(), higher_is_better=True, margin=0.005, metric="HPS")
    assert result.passed and result.verdict == "pass" and result.method == "exact (zero variance)"
    assert result.ci_low == result.ci_high == 0.0 and "zero spread" in result.explanation


def test_a_backend_with_strong_noise_fails():
    ref = hps_like(40)
    cand = ref - 0.02 + np.random.default_rng(1).normal(0, 0.01, size=40)  # a lossy backend: -2 points HPS
    result = paired_noninferiority(cand, ref, higher_is_better=True, margin=0.005, metric="HPS")
    assert result.failed and not result.passed and result.ci_high < -0.005
    assert "-> fail" in result.explanation and "CI" in result.explanation


def test_small_jitter_passes_and_pairing_is_what_makes_it_pass():
    ref = hps_like(60)
    cand = ref + np.random.default_rng(2).normal(0, 0.001, size=60)
    assert paired_noninferiority(cand, ref, True, margin=0.003).passed
    unpaired = hps_like(60, seed=9)  # same distribution, other prompts: the spread swamps the margin
    assert paired_noninferiority(unpaired, ref, True, margin=0.003).verdict != "pass"


def test_a_higher_score_never_fails_and_lower_is_better_is_mirrored():
    ref = hps_like(30)
    better = ref + 0.05
    assert paired_noninferiority(better, ref, higher_is_better=True, margin=0.0).passed
    fid_like = np.random.default_rng(3).uniform(10, 20, size=30)
    assert paired_noninferiority(fid_like - 2, fid_like, higher_is_better=False, margin=0.0).passed
    worse = paired_noninferiority(fid_like + 2 + np.random.default_rng(4).normal(0, 0.1, 30), fid_like,
                                  higher_is_better=False, margin=0.5)
    assert worse.failed and worse.ci_low > 0.5


def test_a_handful_of_prompts_is_inconclusive_not_a_false_alarm():
    ref = hps_like(4)
    cand = ref + np.array([0.004, -0.012, 0.006, -0.001])  # one bad prompt, mean -0.00075
    result = paired_noninferiority(cand, ref, True, margin=0.005)
    assert result.verdict == "inconclusive" and not result.passed and not result.failed
    assert "within the margin" in result.explanation and "prompts would settle it" in result.explanation


def test_a_few_prompts_get_a_student_t_interval_not_a_falsely_narrow_bootstrap():
    ref = hps_like(3)
    cand = ref + np.array([0.001, 0.003, -0.002])
    result = paired_noninferiority(cand, ref, True, margin=0.0025)
    assert result.method == "Student t (n<10)" and result.verdict == "inconclusive"
    # a bootstrap of 3 values never leaves [-0.002, 0.003]: it would pass
    assert paired_noninferiority(cand, ref, True, margin=0.0025, min_bootstrap_n=2).passed
    assert "Student t" in result.explanation


def test_the_interval_shrinks_as_the_prompt_count_grows():
    rng = np.random.default_rng(5)
    widths = []
    for n in (10, 40, 160, 640):
        ref = hps_like(n, seed=n)
        cand = ref - 0.002 + rng.normal(0, 0.004, size=n)
        result = paired_noninferiority(cand, ref, True, margin=0.01, n_resamples=2000)
        widths.append(result.ci_high - result.ci_low)
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < widths[0] / 4  # ~1/sqrt(n): 64x the prompts, ~8x narrower


def test_one_prompt_has_no_interval_and_says_so():
    result = paired_noninferiority([0.30], [0.28], True, margin=0.0, metric="HPS")
    assert result.passed and result.ci_low is None and "no interval" in result.explanation
    assert paired_noninferiority([0.20], [0.28], True, margin=0.01).failed


@pytest.mark.parametrize("cand, ref, message", [
    ([1.0, 2.0], [1.0], "paired"),
    ([], [], "no values"),
    ([1.0, float("nan")], [1.0, 1.0], r"non-finite values at indices \[1\]"),
])
def test_bad_inputs(cand, ref, message):
    with pytest.raises(ValueError, match=message):
        paired_noninferiority(cand, ref, True, margin=0.1)


def test_seeded_intervals_are_reproducible():
    ref = hps_like(25)
    cand = ref + np.random.default_rng(6).normal(0, 0.003, size=25)
    a = paired_noninferiority(cand, ref, True, margin=0.005, seed=11)
    b = paired_noninferiority(cand, ref, True, margin=0.005, seed=11)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)


def test_mean_with_ci_for_value_plus_minus_ci():
    values = hps_like(200)
    mean, low, high = mean_with_ci(values)
    assert low < mean < high and high - low < 0.01
    assert mean_with_ci([3.0]) == (3.0, None, None)
    assert mean_with_ci([2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_delta_gate_is_direction_aware():
    assert delta_gate(0.30, 0.27, higher_is_better=True, tolerance=0.0).passed  # higher HPS never fails
    assert not delta_gate(0.26, 0.27, higher_is_better=True, tolerance=0.005).passed
    assert delta_gate(12.0, 10.0, higher_is_better=False, tolerance=0.25, relative=True).passed
    failed = delta_gate(13.0, 10.0, higher_is_better=False, tolerance=0.25, relative=True, metric="FID")
    assert not failed.passed and "25% of reference = 2.5" in failed.explanation


def test_end_to_end_image_similarity_to_the_input_with_a_noisy_backend():
    """img2img fidelity per image (tiny CLIP): the reference keeps the input, a noisy backend does not."""
    clip = tiny_clip()
    rng = np.random.default_rng(0)
    inputs = []
    for i in range(12):  # 32 px, the tiny CLIP's own size, so its processor does not average the noise away
        photo = load_sample_image(["astronaut", "chelsea", "coffee", "rocket"][i % 4])
        x, y = rng.integers(0, 200, size=2)
        crop = np.array(photo.crop((x, y, x + 256, y + 256)).resize((32, 32)))
        inputs.append(torch.from_numpy(crop).permute(2, 0, 1))
    inputs = torch.stack(inputs)

    def backend(sigma):
        noise = sigma * torch.randn(inputs.shape, generator=torch.Generator().manual_seed(0))
        return clip.image_similarity(inputs, (inputs.float() + noise).clamp(0, 255).byte()).numpy()

    reference = backend(0)
    assert paired_noninferiority(backend(0), reference, True, margin=0.005).passed
    assert paired_noninferiority(backend(10), reference, True, margin=0.005).passed
    assert paired_noninferiority(backend(80), reference, True, margin=0.005).failed
