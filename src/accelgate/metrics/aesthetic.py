"""LAION aesthetic score: the improved-aesthetic-predictor MLP on CLIP ViT-L/14 image embeddings.

The head is written out here because it ships only as a state dict (no package to import):
`sac+logos+ava1-l14-linearMSE.pth`, keys `layers.{0,2,4,6,7}.{weight,bias}`, trained on
L2-normalized OpenAI CLIP ViT-L/14 image embeddings (768-d). transformers'
`openai/clip-vit-large-patch14` `get_image_features` is that embedding (the same weights,
converted), so `ClipFeatures.load()` with the default model feeds it. Scores are on the
AVA-like 1-10 scale (good photos ~5-6.5). Higher is better.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from accelgate.metrics.weights import load_checkpoint, load_state_dict_strict, resolve_file

AESTHETIC_KEYS = tuple(f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias"))
AESTHETIC_EMBED_DIM = 768


class AestheticHead(nn.Module):
    """Linear(768,1024) Dropout Linear(1024,128) Dropout Linear(128,64) Dropout Linear(64,16) Linear(16,1).

    Dropout rates (0.2, 0.2, 0.1) are the published ones; they do nothing in eval mode but keep
    the layer indices, hence the state-dict keys, identical to the checkpoint.
    """

    def __init__(self, input_size: int = AESTHETIC_EMBED_DIM):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


def load_aesthetic_head(path: str | None = None, *, device="cpu") -> AestheticHead:
    """The published head from a configured path or the caches (see weights.py); never downloads."""
    file = resolve_file("aesthetic", path)
    state = load_checkpoint(file, "aesthetic")
    head = AestheticHead()
    load_state_dict_strict(head, state, "aesthetic", file)
    return head.to(device).eval()


@torch.inference_mode()
def aesthetic_score(image_embeddings: torch.Tensor, head: AestheticHead) -> torch.Tensor:
    """Per-image aesthetic score from raw CLIP ViT-L/14 image embeddings [N, 768]."""
    emb = torch.as_tensor(image_embeddings).float()
    if emb.ndim != 2 or emb.shape[1] != head.input_size:
        raise ValueError(f"aesthetic_score: embeddings of shape {tuple(emb.shape)}; the head takes "
                         f"[N, {head.input_size}] CLIP ViT-L/14 image embeddings (openai/clip-vit-large-patch14)")
    param = next(head.parameters())
    emb = F.normalize(emb, dim=-1).to(param.device, param.dtype)  # the predictor was trained on unit vectors
    return head(emb).squeeze(-1).float().cpu()


class AestheticScorer:
    """ClipFeatures + head: images in, per-image scores out."""

    def __init__(self, clip, head: AestheticHead, *, label: str = "", random_weights: bool | None = None):
        if clip.embed_dim != head.input_size:
            raise ValueError(f"aesthetic: the CLIP model {clip.label} embeds to {clip.embed_dim} dims; the LAION "
                             f"head needs {head.input_size} (openai/clip-vit-large-patch14)")
        self.clip, self.head = clip, head.to(clip.device).eval()
        self.random_weights = clip.random_weights if random_weights is None else random_weights
        self.label = label or f"LAION aesthetic v2 (sac+logos+ava1 linearMSE) on {clip.label}"

    @classmethod
    def load(cls, clip_model: str | None = None, head_path: str | None = None, *, device="cpu",
             batch_size: int = 32) -> "AestheticScorer":
        from accelgate.metrics.clip import DEFAULT_CLIP, ClipFeatures

        head = load_aesthetic_head(head_path)  # the small file first: a miss costs no CLIP load
        clip = ClipFeatures.load(clip_model or DEFAULT_CLIP, device=device, batch_size=batch_size)
        return cls(clip, head)

    def score(self, images) -> torch.Tensor:
        return aesthetic_score(self.clip.image_features(images), self.head)
