"""Human Preference Score v2 / v2.1 through open_clip, without the hpsv2 package.

The hpsv2 package (1.2.0) pins pytest==7.2.0 and protobuf<4, vendors open_clip 2.16 without
its BPE vocabulary file, and imports `turtle`; installing it would break this test suite.
What it computes is small, so it is reproduced here on the installed open_clip:

- model: open_clip ViT-H-14, all weights from the HPS checkpoint's `state_dict`
  (`HPS_v2_compressed.pt` or `HPS_v2.1_compressed.pt`, hub repo xswu/HPSv2); the LAION
  base weights hpsv2 loads first are fully overwritten, so they are not needed;
- preprocessing: hpsv2's `preprocess_val` (its `image_transform(..., resize_longest_max=True)`
  with light augmentation): to RGB, to a [0, 1] tensor, resize the longer side to 224 with
  bicubic *on the tensor*, pad with 0 to 224x224 (centred, the odd pixel right/bottom), normalize with
  OpenAI CLIP's mean/std. Because hpsv2 resizes a tensor, its antialiasing follows
  torchvision's tensor default: off before torchvision 0.17 (when HPS v2 was published),
  on since; `antialias=True` matches hpsv2 on a current torchvision. hpsv2 skips the pad
  when the longer side is already 224; here a non-square image is always padded to square;
- score: the diagonal of image_features @ text_features.T with both L2-normalized, i.e. the
  cosine (hpsv2's `score()` returns this; published tables multiply by 100). hpsv2 runs
  under CUDA fp16 autocast; this runs in the model's dtype (fp32 by default).

v2.0 and v2.1 are different checkpoints whose scores are not comparable: every result
records its `version`, and a gate must compare candidate and reference at the same one.
Higher is better.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from accelgate.metrics.catalog import HPS_VERSIONS
from accelgate.metrics.features import as_uint8_nchw, cached_text_features, finite_features
from accelgate.metrics.weights import MetricWeightsCorrupt, load_checkpoint, load_state_dict_strict, resolve_file

HPS_MODEL = "ViT-H-14"
HPS_TABLE_SCALE = 100  # published HPS tables report 100 x cosine
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def hps_preprocess(images: torch.Tensor, image_size: int = 224, antialias: bool = True) -> torch.Tensor:
    """hpsv2's eval transform on a uint8 batch [N, 3, H, W] (one size): longest side, pad, normalize."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    x = images.float() / 255  # ToTensor
    height, width = x.shape[-2:]
    scale = image_size / float(max(height, width))
    if scale != 1.0:
        new_size = [round(height * scale), round(width * scale)]  # Python round, as hpsv2
        x = TF.resize(x, new_size, InterpolationMode.BICUBIC, antialias=antialias)
    pad_h, pad_w = image_size - x.shape[-2], image_size - x.shape[-1]
    if pad_h or pad_w:
        x = TF.pad(x, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    mean = torch.tensor(OPENAI_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def hps_score(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Per-pair HPS: the diagonal of normalized image @ text features (a cosine in [-1, 1])."""
    img, txt = torch.as_tensor(image_features).float(), torch.as_tensor(text_features).float()
    if img.shape != txt.shape:
        raise ValueError(f"hps_score: {tuple(img.shape)} image vs {tuple(txt.shape)} text features; "
                         "one prompt per image")
    return (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(dim=-1)


def load_hps_state_dict(path, key: str) -> dict:
    checkpoint = load_checkpoint(path, key)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        return checkpoint["state_dict"]
    if isinstance(checkpoint, dict) and any(k.startswith("visual.") for k in checkpoint):
        return checkpoint  # a bare state dict, e.g. re-saved
    raise MetricWeightsCorrupt(f"{key}: {path} has no 'state_dict' entry (keys: {list(checkpoint)[:5]}); "
                               "an HPS checkpoint is {'state_dict': open_clip ViT-H-14 weights}")


class HPSScorer:
    """An open_clip model with HPS weights, its tokenizer and hpsv2's preprocessing, held once."""

    def __init__(self, model, tokenizer, version: str, *, device="cpu", batch_size: int = 16,
                 label: str = "", random_weights: bool = False, antialias: bool = True):
        if version not in HPS_VERSIONS:
            raise ValueError(f"HPS version {version!r}; known: {', '.join(HPS_VERSIONS)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.version = version
        self.batch_size = batch_size
        self.antialias = antialias
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.label = label or f"HPS {version} ({HPS_MODEL})"
        self.random_weights = random_weights
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def load(cls, version: str = "v2.1", checkpoint: str | None = None, *, device="cpu", batch_size: int = 16,
             model_name: str = HPS_MODEL, antialias: bool = True) -> "HPSScorer":
        """Resolve the checkpoint offline (weights.py), build ViT-H-14 and load it strictly."""
        import open_clip

        if version not in HPS_VERSIONS:
            raise ValueError(f"HPS version {version!r}; known: {', '.join(HPS_VERSIONS)}")
        key = HPS_VERSIONS[version]
        path = resolve_file(key, checkpoint)
        state = load_hps_state_dict(path, key)  # before building a 1B-parameter model
        model = open_clip.create_model(model_name, pretrained=None, device=device)
        load_state_dict_strict(model, state, key, path)
        return cls(model, open_clip.get_tokenizer(model_name), version, device=device, batch_size=batch_size,
                   antialias=antialias)

    @torch.inference_mode()
    def image_features(self, images, what: str = "images") -> torch.Tensor:
        batch = as_uint8_nchw(images, what)
        dtype = next(self.model.parameters()).dtype
        out = []
        for start in range(0, batch.shape[0], self.batch_size):
            x = hps_preprocess(batch[start:start + self.batch_size].to(self.device), self.image_size, self.antialias)
            out.append(self.model.encode_image(x.to(dtype), normalize=True).float().cpu())
        return finite_features(torch.cat(out), what, self.label)

    @torch.inference_mode()
    def text_features(self, prompts: list[str] | str, what: str = "prompts") -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        rows = cached_text_features(
            prompts, self._text_cache, self.batch_size,
            lambda chunk: self.model.encode_text(self.tokenizer(chunk).to(self.device), normalize=True).float().cpu())
        return finite_features(torch.stack(rows), what, self.label)

    def score(self, images, prompts: list[str]) -> torch.Tensor:
        """Per-image HPS (cosine; x100 for tables) of each image against its own prompt."""
        return hps_score(self.image_features(images), self.text_features(prompts))
