"""CLIP score / directional / image similarity: parity with torchmetrics' formula on a tiny CLIP.

torchmetrics 1.9's CLIPScore crashes on transformers 5 (`get_image_features` returns a model
output), so its functional `clip_score` is given the same tiny model through a thin adapter
that returns the pooled tensor, exactly what transformers 4 returned.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from accelgate.metrics.clip import (
    ClipFeatures, clip_score, clip_score_mean, directional_similarity, image_similarity,
)
from accelgate.metrics.offline import tiny_clip_model_and_processor
from accelgate.models.tokenizers import clip_tokenizer
from accelgate.metrics.weights import MetricWeightsMissing
from accelgate.prompts.sets import get_prompt_set, load_sample_image

pytestmark = pytest.mark.usefixtures("empty_caches")


@pytest.fixture(scope="module")
def tiny():
    return tiny_clip_model_and_processor(seed=0)


@pytest.fixture(scope="module")
def clip(tiny):
    model, processor = tiny
    return ClipFeatures(model, processor, batch_size=3, random_weights=True)


def photos(n=6, size=48) -> torch.Tensor:
    """Real photographs (scikit-image's), cropped and resized to one size, uint8 NCHW."""
    out = []
    for i in range(n):
        image = load_sample_image(["astronaut", "chelsea", "coffee", "rocket"][i % 4])
        w, h = image.size
        box = (i * 7 % 40, i * 5 % 30, min(w, h) - i * 3 % 20, min(w, h) - i * 11 % 25)
        out.append(torch.from_numpy(np.array(image.crop(box).resize((size, size)))).permute(2, 0, 1))
    return torch.stack(out)


class _Tensors(torch.nn.Module):
    """transformers-4 behaviour for torchmetrics: the feature getters return tensors."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs):
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return self.model.get_text_features(*args, **kwargs).pooler_output


def test_offline_tokenizer_matches_open_clip():
    from open_clip.tokenizer import SimpleTokenizer

    prompts = [p.prompt for p in get_prompt_set("diffusers-guide").items + get_prompt_set("parti-sample").items]
    ours = clip_tokenizer()(prompts).input_ids
    reference = SimpleTokenizer()(prompts)  # OpenAI's tokenizer as open_clip ships it
    for ids, ref in zip(ours, reference):
        assert ids == ref[: len(ids)].tolist() and ref[len(ids):].eq(0).all()
    assert ours[0][:3] == [49406, 320, 1125]  # <|startoftext|> "a" "photo"


def test_clip_score_equals_torchmetrics(tiny, clip):
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.functional.multimodal import clip_score as tm_clip_score

    model, processor = tiny
    images, prompts = photos(6), [p.prompt for p in get_prompt_set("diffusers-guide").items]
    ours = clip_score(clip.image_features(images), clip.text_features(prompts), clamp=False)
    tm_per_sample, n = _clip_score_update(list(images), prompts, _Tensors(model), processor)
    assert n == 6
    torch.testing.assert_close(ours, tm_per_sample.float().cpu(), rtol=0, atol=1e-4)
    tm_mean = tm_clip_score(list(images), prompts, model_name_or_path=lambda: (_Tensors(model), processor))
    assert clip_score_mean(ours) == pytest.approx(float(tm_mean.detach()), abs=1e-4)


def test_clamp_is_per_sample_here_and_on_the_mean_in_torchmetrics():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # cosines 1 and -1/sqrt(2)
    raw = clip_score(image, text, clamp=False)
    torch.testing.assert_close(raw, torch.tensor([100.0, -100 / 2 ** 0.5]))
    torch.testing.assert_close(clip_score(image, text), torch.tensor([100.0, 0.0]))  # documented formula
    assert clip_score_mean(raw) == pytest.approx((100 - 100 / 2 ** 0.5) / 2)  # torchmetrics' code
    assert clip_score_mean(torch.tensor([-5.0, -1.0])) == 0.0


def test_batching_and_text_cache_do_not_change_features(tiny, clip):
    model, processor = tiny
    one = ClipFeatures(model, processor, batch_size=1)
    images, prompts = photos(4), ["a cat", "an astronaut in a white suit", "a cat", "coffee"]
    torch.testing.assert_close(one.image_features(images), clip.image_features(images), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one.text_features(prompts), clip.text_features(prompts), atol=1e-5, rtol=1e-5)
    assert torch.equal(clip.text_features(prompts)[0], clip.text_features(prompts)[2])


def test_long_prompt_is_truncated_keeping_the_end_token(clip):
    long = "a very detailed painting of " + "a red fox and " * 60 + "a moon"
    tokens = clip.processor(text=[long], truncation=True, max_length=77, return_tensors="pt")["input_ids"]
    assert tokens.shape[1] == 77 and tokens[0, -1].item() == 49407
    assert torch.isfinite(clip.text_features([long])).all()


def test_directional_and_image_similarity_formulas():
    e0, e1 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    assert directional_similarity(e0, e1, e0, e1).item() == pytest.approx(1.0)  # image moved like the caption
    assert directional_similarity(e0, e1, e1, e0).item() == pytest.approx(-1.0)
    assert directional_similarity(2 * e0, 3 * e1, e0, e1).item() == pytest.approx(1.0)  # scale-free
    assert image_similarity(e0, 5 * e0).item() == pytest.approx(1.0)
    assert image_similarity(e0, e1).item() == pytest.approx(0.0)


def test_edit_metrics_on_the_pix2pix_set(clip):
    items = get_prompt_set("pix2pix-edit").items
    sources = torch.stack([torch.from_numpy(np.array(load_sample_image(i.image).resize((48, 48)))).permute(2, 0, 1)
                           for i in items])
    edited = torch.flip(sources, dims=[-1])
    captions_in, captions_out = [i.input_caption for i in items], [i.output_caption for i in items]
    d = clip.directional_similarity(sources, edited, captions_in, captions_out)
    s = clip.image_similarity(sources, edited)
    assert d.shape == s.shape == (4,) and d.abs().le(1 + 1e-6).all() and s.abs().le(1 + 1e-6).all()
    torch.testing.assert_close(clip.image_similarity(sources, sources), torch.ones(4), atol=1e-5, rtol=0)
    # the guide's formula on the same features
    i0, i1 = F.normalize(clip.image_features(sources), dim=-1), F.normalize(clip.image_features(edited), dim=-1)
    t0 = F.normalize(clip.text_features([i.input_caption for i in items]), dim=-1)
    t1 = F.normalize(clip.text_features([i.output_caption for i in items]), dim=-1)
    torch.testing.assert_close(d, F.cosine_similarity(i1 - i0, t1 - t0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad, message", [
    (torch.full((2, 3, 8, 8), float("nan")), "non-finite"),
    (torch.rand(2, 3, 8, 8) * 2 - 1, r"\[0, 1\]"),
    ([torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3, 8, 9, dtype=torch.uint8)], "mixed sizes"),
])
def test_bad_images_are_refused(clip, bad, message):
    with pytest.raises(ValueError, match=message):
        clip.image_features(bad)


def test_one_prompt_per_image(clip):
    with pytest.raises(ValueError, match="one prompt per image"):
        clip_score(torch.ones(3, 768), torch.ones(2, 768))


def test_float_and_pil_inputs_match_uint8(clip):
    images = photos(2)
    pil = [load_sample_image("astronaut").crop((0, 0, 48, 48)), load_sample_image("chelsea").crop((0, 0, 48, 48))]
    as_float = images.float() / 255
    torch.testing.assert_close(clip.image_features(as_float), clip.image_features(images))
    torch.testing.assert_close(clip.image_features(images.permute(0, 2, 3, 1).numpy()), clip.image_features(images))
    assert clip.image_features(pil).shape == (2, 768)


def test_missing_model_names_repo_and_fetch_command():
    with pytest.raises(MetricWeightsMissing) as info:
        ClipFeatures.load("openai/clip-vit-large-patch14")
    text = str(info.value)
    assert "openai/clip-vit-large-patch14" in text and "hf download" in text and "HF_HUB_CACHE" in text


def test_load_from_a_local_directory(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    loaded = ClipFeatures.load(str(tmp_path / "clip"))
    images = photos(2)
    torch.testing.assert_close(loaded.image_features(images),
                               ClipFeatures(model, processor).image_features(images), atol=1e-5, rtol=1e-5)
    (tmp_path / "clip" / "model.safetensors").unlink()
    with pytest.raises(MetricWeightsMissing, match="incomplete"):
        ClipFeatures.load(str(tmp_path / "clip"))
