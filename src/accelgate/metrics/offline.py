"""Tiny random-weight metric models, built offline, for CPU tests and the CPU smoke run.

Every metric code path (tokenize, preprocess, batch, extract, score, gate) must run in CI,
where no real weights exist. These builders make models with the real *architectures* and
the real *tokenizers* but tiny sizes and seeded random weights, in well under a second.

Their numbers mean nothing about image quality: every holder they return has
`random_weights = True` and a label that says so (`RANDOM_LABEL`), and reports must print it.

- The CLIP tokenizer is the real one, rebuilt offline from the BPE merges in open_clip's
  wheel (`accelgate.models.tokenizers`, shared with the tiny pipelines).
- The tiny open_clip model uses open_clip's own `CLIP` class and `SimpleTokenizer`.
- The feature extractor is a small conv net with the Inception interface (pool features +
  class logits from uint8 images), for FID/KID/IS.
"""
from __future__ import annotations

import torch
from torch import nn

from accelgate.metrics.catalog import RANDOM_LABEL
from accelgate.metrics.features import ImageFeatureExtractor
from accelgate.models.tokenizers import clip_tokenizer



def tiny_clip_model_and_processor(seed: int = 0, image_size: int = 32, projection_dim: int = 768, width: int = 32):
    """A seeded random transformers CLIPModel (real vocabulary) and a CLIPProcessor for it.

    `projection_dim=768` by default so the LAION aesthetic head fits its embeddings.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    text = dict(vocab_size=49408, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                pad_token_id=49407)
    vision = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=8)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer())


def tiny_clip(seed: int = 0, device="cpu", batch_size: int = 8, projection_dim: int = 768):
    """`ClipFeatures` on the tiny random CLIP, labelled random-weight."""
    from accelgate.metrics.clip import ClipFeatures

    model, processor = tiny_clip_model_and_processor(seed, projection_dim=projection_dim)
    return ClipFeatures(model, processor, device=device, batch_size=batch_size,
                        label=f"tiny CLIP, {RANDOM_LABEL}", random_weights=True)


def random_aesthetic_head(seed: int = 0):
    from accelgate.metrics.aesthetic import AestheticHead

    torch.manual_seed(seed)
    return AestheticHead().eval()


def tiny_open_clip(seed: int = 0, image_size: int = 32, embed_dim: int = 16):
    """A seeded random open_clip `CLIP` (ViT, real 49408 vocabulary) and its SimpleTokenizer."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim=embed_dim,
                           vision_cfg=dict(image_size=image_size, layers=2, width=32, head_width=16, patch_size=8),
                           text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2))
    return model.eval(), SimpleTokenizer(context_length=77)


def tiny_hps_scorer(seed: int = 0, version: str = "v2.1", device="cpu"):
    from accelgate.metrics.hps import HPSScorer

    model, tokenizer = tiny_open_clip(seed)
    return HPSScorer(model, tokenizer, version, device=device, batch_size=8,
                     label=f"HPS {version} preprocessing on tiny open_clip, {RANDOM_LABEL}", random_weights=True)


class _TinyConvNet(nn.Module):
    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, dim, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor):
        pool = self.body((x.float() - 128) / 128)  # Inception's input scaling, on uint8
        return pool, self.fc(pool)


class TinyFeatureExtractor(ImageFeatureExtractor):
    """Inception's interface (uint8 in; pool features and logits out), random and small."""

    random_weights = True

    def __init__(self, seed: int = 0, dim: int = 32, classes: int = 10, device="cpu", batch_size: int = 16):
        torch.manual_seed(seed)
        super().__init__(_TinyConvNet(dim, classes), device, batch_size)
        self.label = f"tiny conv features ({dim}-d), {RANDOM_LABEL}"

    def _forward(self, batch):
        return self.module(batch)


def tiny_lpips(net: str = "squeeze", device="cpu"):
    """LPIPS with its real linear layers (from the lpips wheel) on a random backbone."""
    from accelgate.metrics.lpips import LpipsMetric

    return LpipsMetric(net, device=device, random_backbone=True)
