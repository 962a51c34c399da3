"""FID / KID / IS parity (torchmetrics, closed forms, torch-fidelity), LPIPS parity, bad inputs."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.linalg
import torch

from accelgate.metrics.features import (
    ImageFeatureExtractor, InceptionFeatures, InsufficientSamples, as_uint8_nchw, real_image_batches,
)
from accelgate.metrics.lpips import LpipsMetric
from accelgate.metrics.offline import TinyFeatureExtractor, tiny_lpips
from accelgate.metrics.set_stats import fid, fid_vs_real, inception_score, kid
from accelgate.metrics.stats import delta_gate
from accelgate.metrics.weights import MetricWeightsCorrupt, MetricWeightsMissing
from accelgate.prompts.sets import load_sample_image

pytestmark = pytest.mark.usefixtures("empty_caches")


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    return tuple(np.array(load_sample_image(name)) for name in ("astronaut", "chelsea", "coffee", "rocket"))


def crops(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """n random crops of scikit-image's photographs, uint8 NCHW: a small 'real' image set."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    out = []
    for i in range(n):
        photo = photos[i % 4]
        y, x = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
        patch = torch.from_numpy(photo[y:y + 96, x:x + 96].copy()).permute(2, 0, 1).float()
        out.append(torch.nn.functional.interpolate(patch[None], size=(size, size), mode="area")[0].round().byte())
    return torch.stack(out)


def add_noise(images: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (images.float() + sigma * torch.randn(images.shape, generator=g)).clamp(0, 255).round().byte()


def closed_form_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# ------------------------------------------------------------------ FID
def test_fid_equals_the_closed_form_on_gaussian_samples():
    rng = np.random.default_rng(0)
    dim = 8
    a_cov = np.diag(np.linspace(0.5, 2.0, dim))
    b_cov = 0.7 * np.eye(dim) + 0.1
    a = rng.multivariate_normal(np.zeros(dim), a_cov, size=3000)
    b = rng.multivariate_normal(np.full(dim, 0.5), b_cov, size=3000)
    value = fid(torch.from_numpy(a), torch.from_numpy(b)).value
    assert value == pytest.approx(closed_form_fid(a, b), rel=1e-9, abs=1e-9)
    population = dim * 0.25 + np.trace(a_cov + b_cov - 2 * scipy.linalg.sqrtm(a_cov @ b_cov).real)
    assert value == pytest.approx(population, rel=0.1)  # and the estimate is near the true distance


def test_fid_equals_torchmetrics_on_the_same_feature_model():
    from torchmetrics.image.fid import FrechetInceptionDistance

    extractor = TinyFeatureExtractor(seed=0, dim=64)
    real, fake = crops(40, seed=0), add_noise(crops(40, seed=1), 20)

    class PoolOnly(torch.nn.Module):  # torchmetrics' own path: images in, features out
        def __init__(self, module):
            super().__init__()
            self.module, self.num_features = module, 64

        def forward(self, x):
            return self.module(x)[0]

    metric = FrechetInceptionDistance(feature=PoolOnly(extractor.module))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with pytest.warns(UserWarning, match="rank-deficient"):
        ours = fid(extractor.extract(fake), extractor.extract(real))
    assert ours.value == pytest.approx(float(metric.compute()), rel=1e-6, abs=1e-9)
    assert ours.n_candidate == 40 and "random-weight" in ours.extractor and not ours.comparable_to_published


def test_fid_refuses_fewer_than_two_images():
    with pytest.raises(InsufficientSamples, match="at least 2"):
        fid(torch.randn(1, 4), torch.randn(10, 4))


def test_fid_vs_real_images_strong_noise_fails_the_delta_gate_and_the_reference_passes():
    extractor = TinyFeatureExtractor(seed=0)
    real = extractor.extract(crops(48, seed=5))  # a 'real' set: other crops of the same photographs
    reference = extractor.extract(crops(48, seed=3))
    ref_fid = fid(reference, real).value
    assert abs(fid(reference, reference).value) < 1e-9
    gate = lambda images: delta_gate(fid(extractor.extract(images), real).value, ref_fid,  # noqa: E731
                                     higher_is_better=False, tolerance=0.5, relative=True, metric="FID")
    assert gate(crops(48, seed=3)).passed  # the reference backend itself
    assert gate(add_noise(crops(48, seed=3), 10)).passed  # mild noise: within 50%
    strong = gate(add_noise(crops(48, seed=3), 60))
    assert not strong.passed and "fail" in strong.explanation


# ------------------------------------------------------------------ KID
def _unbiased_poly_mmd(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m = x.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def test_kid_equals_the_unbiased_mmd_and_torchmetrics():
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(60, 6)), rng.normal(0.3, 1.2, size=(60, 6))
    full = kid(torch.from_numpy(a), torch.from_numpy(b), subset_size=60, subsets=1)
    assert full.value == pytest.approx(_unbiased_poly_mmd(b, a), rel=1e-9)  # one subset = all samples
    ours = kid(torch.from_numpy(a), torch.from_numpy(b), subset_size=20, subsets=30, seed=7)
    with pytest.warns(UserWarning, match="save all extracted features"):
        metric = KernelInceptionDistance(feature=torch.nn.Identity(), subset_size=20, subsets=30)
    metric.update(torch.from_numpy(b), real=True)
    metric.update(torch.from_numpy(a), real=False)
    torch.manual_seed(7)
    mean, std = metric.compute()
    assert ours.value == pytest.approx(float(mean), rel=1e-9) and ours.std == pytest.approx(float(std), rel=1e-9)
    again = kid(torch.from_numpy(a), torch.from_numpy(b), subset_size=20, subsets=30, seed=7)
    assert again.value == ours.value  # seeded: the same subsets every run


def test_kid_subset_size_larger_than_the_sets_is_an_error():
    with pytest.raises(InsufficientSamples, match="subset_size=1000 exceeds the smaller set"):
        kid(torch.randn(50, 4), torch.randn(80, 4), subset_size=1000)
    with pytest.raises(InsufficientSamples, match="at least 2"):
        kid(torch.randn(1, 4), torch.randn(1, 4))
    assert "subset_size=50" in kid(torch.randn(50, 4), torch.randn(80, 4)).note  # default: min(1000, N)


# ------------------------------------------------------------------ IS
def test_inception_score_matches_torch_fidelity_and_the_closed_form():
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torchmetrics.image.inception import InceptionScore

    logits = torch.from_numpy(np.random.default_rng(2).normal(0, 3, size=(200, 12)))
    ours = inception_score(logits, splits=10)
    ref = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    assert ours.value == ref["inception_score_mean"] and ours.std == ref["inception_score_std"]
    with pytest.warns(UserWarning):
        metric = InceptionScore(feature=torch.nn.Identity(), splits=1)
        metric.update(logits)  # one split: torchmetrics' random permutation cannot matter
        assert inception_score(logits, splits=1).value == pytest.approx(float(metric.compute()[0]), rel=1e-9)
    confident = torch.full((400, 8), -50.0)  # each image sure of one class, classes uniform per split: IS = 8
    confident[torch.arange(400), torch.arange(400) % 8] = 50.0
    exact = inception_score(confident, splits=5, shuffle=False)
    assert exact.value == pytest.approx(8.0, rel=1e-9) and exact.std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_needs_two_images_per_split():
    with pytest.raises(InsufficientSamples, match="splits <= 7"):
        inception_score(torch.randn(15, 5), splits=10)


# ------------------------------------------------------------------ Inception module, offline
def test_inception_features_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(0)  # torchvision's Inception-v3 with 1008 classes has torch-fidelity's exact keys
    layout = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(layout.state_dict(), path)
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    image = crops(1, size=64)  # ~1 s per image and pass on a CPU core
    features = InceptionFeatures(str(path)).extract(image)
    assert features.pool.shape == (1, 2048) and features.logits.shape == (1, 1008)
    tf1 = InceptionFeatures(str(path), antialias=False).extract(image)  # the original FID resize
    pool, logits = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"], str(path))(image)
    torch.testing.assert_close(tf1.pool, pool.double(), atol=0, rtol=1e-5)  # random weights: tiny values,
    torch.testing.assert_close(tf1.logits, logits.double(), atol=0, rtol=1e-5)  # so relative only
    (tmp_path / "cut.pth").write_bytes(path.read_bytes()[:4096])
    with pytest.raises(MetricWeightsCorrupt, match="not a readable torch checkpoint"):
        InceptionFeatures(str(tmp_path / "cut.pth"))


def test_inception_missing_names_both_file_names_and_the_torch_hub_dir():
    with pytest.raises(MetricWeightsMissing) as info:
        InceptionFeatures()
    text = str(info.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in text and "pt_inception-2015-12-05-6726825d.pth" in text
    assert "TORCH_HOME" in text and "load_state_dict_from_url" in text


# ------------------------------------------------------------------ inputs
def test_mixed_sizes_and_non_finite_inputs_are_refused():
    with pytest.raises(ValueError, match=r"mixed sizes \(1 at 8x8, 1 at 8x9"):
        as_uint8_nchw([torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3, 8, 9, dtype=torch.uint8)])
    images = torch.rand(2, 3, 8, 8)
    images[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"images\[1\]: 1 non-finite"):
        as_uint8_nchw(images)


def test_non_finite_features_are_refused():
    class Broken(ImageFeatureExtractor):
        label = "broken"

        def _forward(self, batch):
            pool = batch.float().mean(dim=(2, 3))
            pool[0, 0] = float("nan")
            return pool, None

    with pytest.raises(ValueError, match=r"non-finite pool features for images \[0\]"):
        Broken(torch.nn.Identity()).extract(crops(2))


def test_real_image_folder_is_sorted_resized_and_used_for_fid(tmp_path):
    from PIL import Image

    for i, name in enumerate(["b", "a", "c"]):  # mixed sizes on disk; listdir order is not sorted order
        Image.fromarray(np.full((40 + 10 * i, 60, 3), 60 * i, dtype=np.uint8)).save(tmp_path / f"{name}.png")
    batches = list(real_image_batches(tmp_path, size=32, batch_size=2))
    assert [tuple(b.shape) for b in batches] == [(2, 3, 32, 32), (1, 3, 32, 32)]
    assert [int(b[0, 0, 0]) for b in batches[0]] == [60, 0]  # a.png, then b.png
    extractor = TinyFeatureExtractor()
    with pytest.warns(UserWarning, match="N=3 < 32"):
        result, real = fid_vs_real(extractor, extractor.extract(crops(4)), tmp_path)
    assert real.n == 3 and result.n_reference == 3 and np.isfinite(result.value)


# ------------------------------------------------------------------ LPIPS
def test_lpips_matches_the_lpips_package_on_the_same_backbone(tmp_path, monkeypatch):
    import lpips
    import torchvision

    torch.manual_seed(0)
    backbone = torchvision.models.squeezenet1_1(weights=None)
    torch.save(backbone.state_dict(), tmp_path / "squeezenet1_1-b8a52dc0.pth")
    monkeypatch.setattr(torchvision.models, "squeezenet1_1", lambda *a, **k: backbone)  # lpips' own loading path
    reference = lpips.LPIPS(net="squeeze", verbose=False).eval()
    ours = LpipsMetric("squeeze", backbone=str(tmp_path / "squeezenet1_1-b8a52dc0.pth"), batch_size=3)
    a, b = crops(5, size=48, seed=4), add_noise(crops(5, size=48, seed=4), 25)
    with torch.no_grad():
        expected = reference(a.float() / 127.5 - 1, b.float() / 127.5 - 1).flatten()
    torch.testing.assert_close(ours(a, b), expected, atol=1e-6, rtol=1e-5)
    assert ours(a, a).abs().max() < 1e-6


def test_lpips_errors():
    with pytest.raises(MetricWeightsMissing, match="alexnet-owt-7be5be79.pth"):
        LpipsMetric("alex")
    metric = tiny_lpips()
    assert metric.random_weights and "random" in metric.label
    with pytest.raises(ValueError, match="pairs must match"):
        metric(crops(2, size=32), crops(3, size=32))
