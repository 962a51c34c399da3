"""The committed test-bed weights load, match their hashes, and build pipelines that generate.

Cheap on purpose (2 denoising steps, 32 px): what is tested is the stored bytes and the
loading path, not image quality (benchmarks/testbed.md measures that).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from accelgate.testbed import build, evaluate, image_damage, judges, world

MANIFEST = build.WEIGHTS / "MANIFEST.json"
pytestmark = pytest.mark.skipif(
    not MANIFEST.is_file(),
    reason="test-bed weights not trained yet (none are committed): produce them with `python -m accelgate.testbed.train` "
           "(writes src/accelgate/testbed/weights/ and its MANIFEST.json; --resume continues an interrupted run)")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_manifest_hashes_every_file():
    manifest = json.loads(MANIFEST.read_text())
    on_disk = {str(p.relative_to(build.WEIGHTS)) for p in build.WEIGHTS.rglob("*")
               if p.is_file() and p.name != MANIFEST.name}
    assert set(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((build.WEIGHTS / name).read_bytes()).hexdigest() == digest, name
    assert {"torch", "diffusers", "transformers"} <= set(manifest["versions"])
    assert manifest["command"].startswith("python -m accelgate.testbed.train")
    total = sum((build.WEIGHTS / name).stat().st_size for name in manifest["files"])
    assert total < 60e6, f"{total / 1e6:.0f} MB of weights: the test bed is meant to stay around 40 MB"


@pytest.mark.parametrize("family", list(build.FAMILIES))
def test_every_family_generates(family):
    pipe = build.build(family, resolution=32)
    item = world.evaluation_items(1)[0]
    images = evaluate.generate(pipe, family, [item], 32, steps=2)
    assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all() and np.ptp(images) > 0.05


def test_save_and_reload_is_exact(tmp_path):
    """The loading path the suite uses (save_pretrained + from_pretrained) changes nothing."""
    from diffusers import DiTPipeline, StableDiffusionPipeline

    item = world.evaluation_items(1)[0]
    for family, cls, res in (("tiny-sd", StableDiffusionPipeline, 32), ("tiny-dit", DiTPipeline, 64)):
        pipe = build.build(family, resolution=res)
        pipe.save_pretrained(tmp_path / family)
        again = cls.from_pretrained(tmp_path / family, torch_dtype=torch.float32)
        a = evaluate.generate(pipe, family, [item], res, steps=2)
        b = evaluate.generate(again, family, [item], res, steps=2)
        assert a.shape[1] == res and np.array_equal(a, b), family


def test_dit_is_built_for_its_resolution():
    for res in (32, 64):
        transformer = build.build("tiny-dit", resolution=res).transformer
        assert transformer.config.sample_size == res // 4
        assert transformer.pos_embed.base_size == res // 4 // transformer.config.patch_size


def test_judges_load_and_judge():
    classifier = judges.load_classifier()
    scenes = [world.scene_at(4242, i, two_objects=False, train=False) for i in range(24)]
    hits = judges.attribute_hits(classifier, world.render_batch(scenes, 32), scenes)
    assert all(np.mean(v) >= 0.9 for v in hits.values()), {k: np.mean(v) for k, v in hits.items()}
    features = judges.feature_extractor().extract(torch.from_numpy(world.render_batch(scenes[:4], 64)).permute(0, 3, 1, 2))
    assert features.pool.shape == (4, judges.FEATURE_DIM) and features.logits.shape == (4, world.NUM_CLASSES)


def test_clip_exports_agree_and_prefer_clean_images():
    """The transformers CLIP and its open_clip conversion compute the same embeddings; the
    HPS-style and aesthetic-style judges score clean images above blurred ones."""
    model, processor = judges.clip_model_and_processor()
    open_model, tokenizer = judges.open_clip_model_and_tokenizer("clip")
    scenes = [world.scene_at(4242, i, two_objects=False, train=False) for i in range(8)]
    images = torch.from_numpy(world.render_batch(scenes, 32))
    pixels = judges.clip_pixels(images.permute(0, 3, 1, 2))
    with torch.no_grad():
        hf = model.get_image_features(pixel_values=pixels)
        hf = hf if isinstance(hf, torch.Tensor) else hf.pooler_output
        assert torch.allclose(hf, open_model.encode_image(pixels), atol=1e-4)
    blurred = image_damage.blur(images, torch.full((8,), 0.6))
    captions = [s.caption() for s in scenes]
    hps = judges.hps_scorer()
    assert (hps.score(list(images.numpy()), captions) > hps.score(list(blurred.numpy()), captions)).float().mean() >= 0.75
    aesthetic = judges.aesthetic_scorer()
    assert (aesthetic.score(list(images.numpy())) > aesthetic.score(list(blurred.numpy()))).float().mean() >= 0.75
    assert tokenizer(["a red ring"]).shape == (1, 32)
