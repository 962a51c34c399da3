"""LAION aesthetic head (published keys and layout) and HPS v2 (open_clip, hpsv2 preprocessing)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from accelgate.metrics.aesthetic import (
    AESTHETIC_KEYS, AestheticHead, AestheticScorer, aesthetic_score, load_aesthetic_head,
)
from accelgate.metrics.hps import OPENAI_MEAN, OPENAI_STD, HPSScorer, hps_preprocess, hps_score
from accelgate.metrics.offline import random_aesthetic_head, tiny_clip, tiny_hps_scorer, tiny_open_clip
from accelgate.metrics.weights import MetricWeightsCorrupt, MetricWeightsMissing
from accelgate.prompts.sets import get_prompt_set, load_sample_image

pytestmark = pytest.mark.usefixtures("empty_caches")

PUBLISHED_SHAPES = {  # improved-aesthetic-predictor's MLP(768)
    "layers.0.weight": (1024, 768), "layers.0.bias": (1024,), "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
    "layers.4.weight": (64, 128), "layers.4.bias": (64,), "layers.6.weight": (16, 64), "layers.6.bias": (16,),
    "layers.7.weight": (1, 16), "layers.7.bias": (1,),
}


def photos(n=4, size=48) -> torch.Tensor:
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    arrays = [np.array(load_sample_image(names[i % 4]).resize((size, size))) for i in range(n)]
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays])


# ------------------------------------------------------------------ aesthetic
def test_head_has_the_published_keys_and_shapes():
    state = AestheticHead().state_dict()
    assert tuple(state) == AESTHETIC_KEYS
    assert {k: tuple(v.shape) for k, v in state.items()} == PUBLISHED_SHAPES


def test_head_loads_a_published_layout_state_dict(tmp_path):
    torch.manual_seed(1)
    published = {k: torch.randn(shape) for k, shape in PUBLISHED_SHAPES.items()}  # as torch.save(mlp.state_dict())
    torch.save(published, tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    head = load_aesthetic_head(str(tmp_path / "sac+logos+ava1-l14-linearMSE.pth"))
    emb = torch.randn(5, 768)
    x = F.normalize(emb, dim=-1)
    for i in (0, 2, 4, 6, 7):  # the MLP by hand: dropouts are identity in eval
        x = x @ published[f"layers.{i}.weight"].T + published[f"layers.{i}.bias"]
    torch.testing.assert_close(aesthetic_score(emb, head), x.squeeze(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(aesthetic_score(3 * emb, head), aesthetic_score(emb, head))  # normalized input


def test_head_found_by_name_in_the_weights_dir(tmp_path):
    (tmp_path / "weights").mkdir()
    torch.save(AestheticHead().state_dict(), tmp_path / "weights" / "sac+logos+ava1-l14-linearMSE.pth")
    assert isinstance(load_aesthetic_head(), AestheticHead)


def test_head_missing_says_where_and_how():
    with pytest.raises(MetricWeightsMissing) as info:
        load_aesthetic_head()
    text = str(info.value)
    assert "sac+logos+ava1-l14-linearMSE.pth" in text and "ACCELGATE_WEIGHTS_DIR" in text
    assert "curl" in text and "improved-aesthetic-predictor" in text


def test_head_with_wrong_keys_or_truncated_file_is_corrupt(tmp_path):
    bad = {k.replace("layers", "mlp"): v for k, v in AestheticHead().state_dict().items()}
    torch.save(bad, tmp_path / "wrong.pth")
    with pytest.raises(MetricWeightsCorrupt, match="missing keys.*layers.0.bias"):
        load_aesthetic_head(str(tmp_path / "wrong.pth"))
    torch.save(AestheticHead().state_dict(), tmp_path / "ok.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "ok.pth").read_bytes()[:1000])
    with pytest.raises(MetricWeightsCorrupt, match="not a readable torch checkpoint"):
        load_aesthetic_head(str(tmp_path / "cut.pth"))


def test_aesthetic_scorer_on_tiny_clip():
    clip = tiny_clip()
    scorer = AestheticScorer(clip, random_aesthetic_head())
    scores = scorer.score(photos(4))
    assert scores.shape == (4,) and torch.isfinite(scores).all() and scorer.random_weights
    torch.testing.assert_close(scores, aesthetic_score(clip.image_features(photos(4)), scorer.head))
    with pytest.raises(ValueError, match="768"):
        AestheticScorer(tiny_clip(projection_dim=16), random_aesthetic_head())


# ------------------------------------------------------------------ HPS
def test_hps_equals_the_normalized_feature_product():
    model, tokenizer = tiny_open_clip(seed=3)
    scorer = HPSScorer(model, tokenizer, "v2.1", batch_size=3)
    images, prompts = photos(4), [p.prompt for p in get_prompt_set("parti-sample").items][:4]
    ours = scorer.score(images, prompts)
    with torch.no_grad():  # hpsv2's own path: model(image, text) -> normalized features, diagonal
        image_features, text_features, _ = model(hps_preprocess(images, scorer.image_size), tokenizer(prompts))
        reference = torch.diagonal(image_features @ text_features.T)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hps_score(3 * image_features, text_features), reference, atol=1e-5, rtol=1e-5)


def test_hps_preprocess_square_is_bicubic_resize_and_openai_normalize():
    images = photos(2, size=64)
    expected = TF.normalize(TF.resize(images.float() / 255, [224, 224], InterpolationMode.BICUBIC, antialias=True),
                            OPENAI_MEAN, OPENAI_STD)
    torch.testing.assert_close(hps_preprocess(images), expected)


def test_hps_preprocess_pads_the_short_side_with_black():
    wide = torch.full((1, 3, 32, 64), 200, dtype=torch.uint8)  # H=32, W=64 -> 112 x 224, 56 rows of pad each side
    out = hps_preprocess(wide)
    black = (torch.zeros(3) - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)
    assert out.shape == (1, 3, 224, 224)
    torch.testing.assert_close(out[0, :, :56, :].mean(dim=(1, 2)), black)
    torch.testing.assert_close(out[0, :, 168:, :].mean(dim=(1, 2)), black)
    value = (torch.full((3,), 200 / 255) - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)
    torch.testing.assert_close(out[0, :, 60:164, 10:214].mean(dim=(1, 2)), value, atol=1e-4, rtol=0)


def _register_tiny_config(tmp_path):
    import open_clip

    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                                               "patch_size": 8},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "Tiny-HPS-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "configs")


def test_hps_loads_a_checkpoint_state_dict(tmp_path):
    _register_tiny_config(tmp_path)
    model, tokenizer = tiny_open_clip(seed=5)
    checkpoint = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)  # hpsv2's checkpoint layout
    scorer = HPSScorer.load("v2.1", str(checkpoint), model_name="Tiny-HPS-test")
    assert scorer.version == "v2.1" and "v2.1" in scorer.label
    direct = HPSScorer(model, tokenizer, "v2.1")
    images, prompts = photos(2), ["a corgi", "a cube made of porcupine"]
    torch.testing.assert_close(scorer.score(images, prompts), direct.score(images, prompts))
    other, _ = tiny_open_clip(seed=5, embed_dim=8)
    torch.save({"state_dict": other.state_dict()}, tmp_path / "bad.pt")
    with pytest.raises(MetricWeightsCorrupt, match="wrong shapes"):
        HPSScorer.load("v2.0", str(tmp_path / "bad.pt"), model_name="Tiny-HPS-test")
    torch.save({"epoch": 3}, tmp_path / "nostate.pt")
    with pytest.raises(MetricWeightsCorrupt, match="no 'state_dict'"):
        HPSScorer.load("v2.0", str(tmp_path / "nostate.pt"), model_name="Tiny-HPS-test")


def test_hps_missing_checkpoint_names_file_repo_and_places():
    with pytest.raises(MetricWeightsMissing) as info:
        HPSScorer.load("v2.1")
    text = str(info.value)
    for needle in ("HPS_v2.1_compressed.pt", "xswu/HPSv2", "HPS_ROOT", "hf download xswu/HPSv2 HPS_v2.1_compressed.pt"):
        assert needle in text
    with pytest.raises(MetricWeightsMissing, match="HPS_v2_compressed.pt"):
        HPSScorer.load("v2.0")


def test_hps_versions_are_recorded_and_checked():
    assert tiny_hps_scorer(version="v2.0").version == "v2.0"
    model, tokenizer = tiny_open_clip()
    with pytest.raises(ValueError, match="v2.1"):
        HPSScorer(model, tokenizer, "v3")


def test_hps_text_cache_and_mismatch():
    scorer = tiny_hps_scorer()
    features = scorer.text_features(["a", "b", "a"])
    assert torch.equal(features[0], features[2])
    with pytest.raises(ValueError, match="one prompt per image"):
        hps_score(torch.ones(3, 16), torch.ones(2, 16))
