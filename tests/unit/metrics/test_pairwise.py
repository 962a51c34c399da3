"""Pairwise metrics against scikit-image on small synthetic images."""
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from accelgate.metrics import pairwise


def _images(seed=0, size=48):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    noisy = np.clip(base.astype(np.int16) + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
    return base, noisy


def test_ssim_equals_scikit_image_wang_settings():
    a, b = _images()
    expected = structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
    assert pairwise.ssim(a, b) == pytest.approx(expected, abs=1e-12)
    assert pairwise.ssim(a, a) == pytest.approx(1.0)


def test_psnr_equals_scikit_image_and_identical_is_infinite():
    a, b = _images(1)
    assert pairwise.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), rel=1e-9)
    assert pairwise.psnr(a, a) == float("inf")


def test_differences_do_not_wrap_around_like_uint8_subtraction():
    a = np.zeros((8, 8, 3), np.uint8)
    b = np.full((8, 8, 3), 255, np.uint8)
    assert pairwise.max_abs(a, b) == 255
    assert pairwise.psnr(a, b) == pytest.approx(0.0)
    assert pairwise.color_shift(a, b) == pytest.approx(255.0)


def test_color_shift_sees_a_cast_that_ssim_barely_sees():
    a, _ = _images(2, 64)
    cast = a.astype(np.int16)
    cast[..., 0] += 6  # a red cast of 6 levels
    cast = np.clip(cast, 0, 255).astype(np.uint8)
    assert pairwise.ssim(cast, a) > 0.99
    assert pairwise.color_shift(cast, a) > 5.0


def test_mismatched_sizes_and_dtypes_are_reported():
    a, _ = _images(size=32)
    b, _ = _images(size=16)
    with pytest.raises(ValueError, match="different sizes"):
        pairwise.ssim(a, b)
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        pairwise.psnr(a.astype(np.float32), a)


def test_diff_image_amplifies_small_differences():
    a, b = _images(3)
    diff = pairwise.diff_image(a, b)
    assert diff.dtype == np.uint8 and diff.shape == a.shape
    assert diff.max() > pairwise.max_abs(a, b)
