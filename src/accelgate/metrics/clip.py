"""CLIP score, CLIP directional similarity and CLIP image similarity, on transformers' CLIP.

Why not torchmetrics' `CLIPScore`: with transformers >= 5, `get_image_features` returns a
model output instead of a tensor and torchmetrics 1.9 crashes on it (upstream issue 3407);
it also loads a local model only if its path contains "openai". So the model runs here, and
the formulas are plain functions on features that keep torchmetrics' definition:

    per sample: 100 * cos(E_image, E_text)          (torchmetrics `_clip_score_update`)
    torchmetrics' value: max(mean_i(100 * cos_i), 0) (clamp on the MEAN, `clip_score_mean`)

torchmetrics' docstring (and Hessel et al.'s CLIPScore) write max(100 * cos, 0) per sample;
its code clamps only the mean. The two agree whenever no sample has a negative cosine, which
holds in practice for a trained CLIP on matching prompts; they differ on random-weight models.
`clip_score(..., clamp=True)` gives the per-sample clamp (the documented formula) for the
paired per-prompt gate; `clamp=False` gives torchmetrics' raw per-sample values.

Prompts longer than the text model's 77 positions: torchmetrics cuts the token ids, which
drops the end-of-text token the text model pools at; here the tokenizer truncates and keeps
it, like OpenAI's `clip.tokenize(truncate=True)`. Prompts within 77 tokens are identical.

Directional similarity follows the diffusers evaluation guide: cos(E_img_edit - E_img_src,
E_txt_edit - E_txt_src) on L2-normalized features, unscaled (~0.1 for good edits). Image
similarity is the cosine between the input image and the edited image (InstructPix2Pix).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from accelgate.metrics.features import as_uint8_nchw, cached_text_features, finite_features
from accelgate.metrics.weights import MetricWeightsCorrupt, resolve_model_dir

DEFAULT_CLIP = "openai/clip-vit-large-patch14"  # torchmetrics' default; the aesthetic head needs it too


def _pooled(output) -> torch.Tensor:
    """transformers 5 returns a model output whose `pooler_output` is the projected embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipFeatures:
    """A CLIP model and its processor, loaded once, run batched on one device.

    Features come back as float32 on CPU, unnormalized (the score functions normalize), so
    candidate and reference backends can share cached text features.
    """

    def __init__(self, model, processor, *, device: str | torch.device = "cpu", batch_size: int = 32,
                 label: str = "", random_weights: bool = False):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.batch_size = batch_size
        self.label = label or getattr(model.config, "_name_or_path", "") or "CLIP"
        self.random_weights = random_weights
        self._text_cache: dict[str, torch.Tensor] = {}
        self.max_text_length = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def load(cls, model: str = DEFAULT_CLIP, *, device="cpu", batch_size: int = 32,
             dtype=torch.float32) -> "ClipFeatures":
        """From a local directory or a hub repo id already in the HF cache; never downloads."""
        from transformers import CLIPModel, CLIPProcessor

        path = resolve_model_dir("clip", model)
        try:
            clip = CLIPModel.from_pretrained(path, local_files_only=True, dtype=dtype)
            processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as error:
            raise MetricWeightsCorrupt(f"clip: {path} could not be loaded as a CLIP model: "
                                       f"{str(error).splitlines()[0]}") from None
        return cls(clip, processor, device=device, batch_size=batch_size, label=str(model))

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.inference_mode()
    def image_features(self, images, what: str = "images") -> torch.Tensor:
        """Projected image embeddings [N, D] of uint8/float/PIL images (any one size per call)."""
        batch = as_uint8_nchw(images, what)
        out = []
        for start in range(0, batch.shape[0], self.batch_size):
            chunk = list(batch[start:start + self.batch_size])
            pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device, self.model.dtype)
            out.append(_pooled(self.model.get_image_features(pixel_values=pixels)).float().cpu())
        return finite_features(torch.cat(out), what, self.label)

    @torch.inference_mode()
    def text_features(self, texts: list[str] | str, what: str = "prompts") -> torch.Tensor:
        """Projected text embeddings [N, D]; cached per string (both backends share prompts)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        def encode(chunk: list[str]) -> torch.Tensor:
            tokens = self.processor(text=chunk, return_tensors="pt", padding=True, truncation=True,
                                    max_length=self.max_text_length)
            feats = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                 attention_mask=tokens["attention_mask"].to(self.device))
            return _pooled(feats).float().cpu()

        rows = cached_text_features(texts, self._text_cache, self.batch_size, encode)
        if not texts:
            return torch.empty(0, self.embed_dim)
        return finite_features(torch.stack(rows), what, self.label)

    # Convenience: images + prompts -> scores, features computed here.
    def clip_score(self, images, prompts: list[str], clamp: bool = True) -> torch.Tensor:
        return clip_score(self.image_features(images), self.text_features(prompts), clamp=clamp)

    def directional_similarity(self, source_images, edited_images, source_captions, edited_captions) -> torch.Tensor:
        return directional_similarity(self.image_features(source_images, "input images"),
                                      self.image_features(edited_images, "edited images"),
                                      self.text_features(source_captions, "input captions"),
                                      self.text_features(edited_captions, "output captions"))

    def image_similarity(self, source_images, edited_images) -> torch.Tensor:
        return image_similarity(self.image_features(source_images, "input images"),
                                self.image_features(edited_images, "edited images"))


def _pair(a: torch.Tensor, b: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    if a.ndim == 1:
        a = a.unsqueeze(0)
    if b.ndim == 1:
        b = b.unsqueeze(0)
    if a.shape != b.shape:
        raise ValueError(f"{what}: feature shapes differ, {tuple(a.shape)} vs {tuple(b.shape)} "
                         "(one prompt per image, same CLIP for both)")
    return a, b


def clip_score(image_features, text_features, clamp: bool = True) -> torch.Tensor:
    """Per-sample CLIP score, 100 * cosine; `clamp` sets each negative sample to 0 (see module doc)."""
    img, txt = _pair(image_features, text_features, "clip_score")
    score = 100 * (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(dim=-1)
    return score.clamp(min=0) if clamp else score


def clip_score_mean(per_sample_unclamped) -> float:
    """torchmetrics' reported CLIPScore: the mean of raw per-sample scores, clamped at 0."""
    scores = torch.as_tensor(per_sample_unclamped, dtype=torch.float64)
    return float(torch.clamp(scores.mean(), min=0))


def directional_similarity(source_image_features, edited_image_features,
                           source_text_features, edited_text_features) -> torch.Tensor:
    """Per-sample CLIP directional similarity (diffusers guide): does the image move like the caption?"""
    i0, i1 = _pair(source_image_features, edited_image_features, "directional_similarity images")
    t0, t1 = _pair(source_text_features, edited_text_features, "directional_similarity captions")
    _pair(i0, t0, "directional_similarity image vs text")
    image_dir = F.normalize(i1, dim=-1) - F.normalize(i0, dim=-1)
    text_dir = F.normalize(t1, dim=-1) - F.normalize(t0, dim=-1)
    return F.cosine_similarity(image_dir, text_dir, dim=-1)


def image_similarity(source_image_features, edited_image_features) -> torch.Tensor:
    """Per-sample cosine between the input image and the edited image (how much was kept)."""
    a, b = _pair(source_image_features, edited_image_features, "image_similarity")
    return F.cosine_similarity(a, b, dim=-1)
