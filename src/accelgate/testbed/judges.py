"""The test bed's judges: trained on the same world, in the forms the metric code takes.

- `AttributeClassifier`: names shape, colour, position, size, background (and plain vs
  gradient, one vs two objects) of a 32 or 64 px image: prompt-adherence accuracy in the
  GenEval manner, and its 128-d penultimate features for a domain FID/KID
  (`feature_extractor()`, an `ImageFeatureExtractor` like the Inception one).
- A contrastive image-text model trained as a transformers `CLIPModel`
  (`clip_model_and_processor()`, what `metrics.clip.ClipFeatures` takes) and converted
  exactly into open_clip's `CLIP` (`open_clip_model_and_tokenizer("clip")`); its
  preference-tuned copy is the HPS-style judge (`open_clip_model_and_tokenizer("hps")`, what
  `metrics.hps.HPSScorer` takes), and an `AestheticHead` on its image embeddings is the
  aesthetic-style judge (`aesthetic_head()`).

The accelgate metric classes are imported lazily, only by the convenience constructors at
the bottom, so this module (and training) does not depend on where they live.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from accelgate.testbed import build, text, world

JUDGES = "judges"
HEADS = {"shape": len(world.SHAPES), "colour": len(world.COLOURS), "position": len(world.POSITIONS),
         "size": len(world.SIZES), "background": len(world.BACKGROUNDS), "kind": len(world.BACKGROUND_KINDS),
         "count": 2}
ATTRIBUTE_NAMES = {"shape": world.SHAPES, "colour": world.COLOUR_NAMES, "position": world.POSITIONS,
                   "size": world.SIZE_NAMES, "background": world.BACKGROUND_NAMES, "kind": world.BACKGROUND_KINDS}
FEATURE_DIM = 128
CLIP_EMBED = 64
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def judge_input(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """uint8 NCHW (any square size) -> float NCHW at `size`, antialiased, roughly unit range."""
    x = images.float() / 127.5 - 1.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


class AttributeClassifier(nn.Module):
    """A small CNN over 32 px input; position survives because the last map is flattened."""

    def __init__(self):
        super().__init__()

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU()]

        self.body = nn.Sequential(*block(3, 16), *block(16, 16), nn.AvgPool2d(2), *block(16, 32), *block(32, 32),
                                  nn.AvgPool2d(2), *block(32, 64), nn.AvgPool2d(2), nn.Flatten(),
                                  nn.Linear(64 * 4 * 4, FEATURE_DIM), nn.SiLU())
        self.heads = nn.ModuleDict({k: nn.Linear(FEATURE_DIM, n) for k, n in HEADS.items()})

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """uint8 NCHW images -> (features [N, 128], logits per head)."""
        feats = self.body(judge_input(images))
        return feats, {k: h(feats) for k, h in self.heads.items()}


def class_logits(logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log-probabilities over DiT's shape x colour classes (the IS logits)."""
    shape = F.log_softmax(logits["shape"], -1)
    colour = F.log_softmax(logits["colour"], -1)
    return (shape[:, :, None] + colour[:, None, :]).flatten(1)


# ------------------------------------------------------------------------------ CLIP
def clip_config():
    from transformers import CLIPConfig

    tok = text.clip_tokenizer()
    width = 64
    common = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=4, num_attention_heads=4,
                  hidden_act="gelu")
    return CLIPConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=text.CLIP_MAX_LENGTH,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.eos_token_id, **common),
        vision_config=dict(image_size=32, patch_size=4, **common),
        projection_dim=CLIP_EMBED,
    )


def clip_processor(tokenizer=None):
    from transformers import CLIPImageProcessor, CLIPProcessor

    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer or text.clip_tokenizer())


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> CLIP pixel values at 32 px (training's stand-in for CLIPImageProcessor)."""
    x = images.float() / 255.0
    if x.shape[-1] != 32:
        x = F.interpolate(x, size=(32, 32), mode="bicubic", antialias=True, align_corners=False)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def open_clip_config(config=None) -> dict:
    c = config or clip_config()
    v, t = c.vision_config, c.text_config
    return {
        "embed_dim": c.projection_dim,
        "vision_cfg": {"image_size": v.image_size, "patch_size": v.patch_size, "width": v.hidden_size,
                       "layers": v.num_hidden_layers, "head_width": v.hidden_size // v.num_attention_heads,
                       "mlp_ratio": v.intermediate_size / v.hidden_size},
        "text_cfg": {"context_length": t.max_position_embeddings, "vocab_size": t.vocab_size, "width": t.hidden_size,
                     "heads": t.num_attention_heads, "layers": t.num_hidden_layers,
                     "mlp_ratio": t.intermediate_size / t.hidden_size},
    }


def _blocks(state: dict, src: str, dst: str, layers: int) -> dict:
    out = {}
    for i in range(layers):
        a, b = f"{src}.encoder.layers.{i}.", f"{dst}.transformer.resblocks.{i}."
        out[b + "attn.in_proj_weight"] = torch.cat([state[a + f"self_attn.{p}_proj.weight"] for p in "qkv"])
        out[b + "attn.in_proj_bias"] = torch.cat([state[a + f"self_attn.{p}_proj.bias"] for p in "qkv"])
        pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                 "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
        for new, old in pairs.items():
            out[b + new + ".weight"] = state[a + old + ".weight"]
            out[b + new + ".bias"] = state[a + old + ".bias"]
    return out


def hf_to_open_clip(model) -> dict:
    """An open_clip `CLIP` state dict with exactly the transformers CLIPModel's function."""
    s = {k: v.detach().float() for k, v in model.state_dict().items()}
    c = model.config
    out = {
        "visual.conv1.weight": s["vision_model.embeddings.patch_embedding.weight"],
        "visual.class_embedding": s["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": s["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": s["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": s["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": s["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": s["vision_model.post_layernorm.bias"],
        "visual.proj": s["visual_projection.weight"].T.contiguous(),
        "token_embedding.weight": s["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": s["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": s["text_model.final_layer_norm.weight"],
        "ln_final.bias": s["text_model.final_layer_norm.bias"],
        "text_projection": s["text_projection.weight"].T.contiguous(),
        "logit_scale": s["logit_scale"],
    }
    out.update(_blocks(s, "vision_model", "visual", c.vision_config.num_hidden_layers))
    out.update(_blocks(s, "text_model", "", c.text_config.num_hidden_layers))
    return {k.lstrip("."): v for k, v in out.items()}


def build_open_clip(config: dict):
    import open_clip

    return open_clip.CLIP(**config).eval()


# ------------------------------------------------------------------------------ loaders
def _judges(weights: Path | None) -> Path:
    path = Path(weights or build.WEIGHTS) / JUDGES
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: the test-bed judges are not trained; run python -m accelgate.testbed.train")
    return path


def load_classifier(weights: Path | None = None) -> AttributeClassifier:
    from safetensors.torch import load_file

    model = AttributeClassifier()
    model.load_state_dict({k: v.float() for k, v in load_file(_judges(weights) / "classifier.safetensors").items()})
    return model.eval()


def clip_model_and_processor(weights: Path | None = None):
    """(transformers CLIPModel, CLIPProcessor): what `metrics.clip.ClipFeatures(model, processor)` takes."""
    from transformers import CLIPModel, CLIPProcessor

    path = _judges(weights) / "clip"
    return CLIPModel.from_pretrained(path, dtype=torch.float32).eval(), CLIPProcessor.from_pretrained(path)


def open_clip_model_and_tokenizer(which: str = "hps", weights: Path | None = None):
    """(open_clip CLIP, SimpleTokenizer): `which` = "clip" (the converted CLIP) or "hps" (preference-tuned).

    What `metrics.hps.HPSScorer(model, tokenizer, version)` takes; the checkpoint is
    `{"state_dict": ...}` like HPS v2's, so `metrics.hps.load_hps_state_dict` reads it too.
    """
    folder = _judges(weights) / "open_clip"
    if which not in ("clip", "hps"):
        raise ValueError(f"which={which!r}: 'clip' or 'hps'")
    model = build_open_clip(json.loads((folder / "config.json").read_text()))
    state = torch.load(folder / f"{which}.pt", map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval(), text.open_clip_tokenizer(folder / "bpe_simple_vocab.txt.gz")


def aesthetic_head(weights: Path | None = None):
    """`metrics.aesthetic.AestheticHead(input_size=64)` trained on the CLIP judge's image embeddings."""
    from safetensors.torch import load_file

    from accelgate.metrics.aesthetic import AestheticHead

    head = AestheticHead(input_size=CLIP_EMBED)
    head.load_state_dict({k: v.float() for k, v in load_file(_judges(weights) / "aesthetic.safetensors").items()})
    return head.eval()


# ------------------------------------------------------- metric objects (lazy imports)
LABEL = "test-bed judge (trained on the synthetic world)"


def feature_extractor(weights: Path | None = None, device="cpu", batch_size: int = 64):
    """The classifier as an `ImageFeatureExtractor`: 128-d features (FID/KID), class logits (IS)."""
    from accelgate.metrics.features import ImageFeatureExtractor

    class JudgeFeatures(ImageFeatureExtractor):
        label = f"attribute classifier features (128-d), {LABEL}"

        def _forward(self, batch):
            feats, logits = self.module(batch)
            return feats, class_logits(logits)

    return JudgeFeatures(load_classifier(weights), device, batch_size)


def clip_features(weights: Path | None = None, device="cpu", batch_size: int = 64):
    from accelgate.metrics.clip import ClipFeatures

    model, processor = clip_model_and_processor(weights)
    return ClipFeatures(model, processor, device=device, batch_size=batch_size, label=f"CLIP, {LABEL}")


def hps_scorer(weights: Path | None = None, device="cpu", version: str = "v2.1"):
    from accelgate.metrics.hps import HPSScorer

    model, tokenizer = open_clip_model_and_tokenizer("hps", weights)
    return HPSScorer(model, tokenizer, version, device=device, label=f"HPS-style, {LABEL}")


def aesthetic_scorer(weights: Path | None = None, device="cpu"):
    from accelgate.metrics.aesthetic import AestheticScorer

    return AestheticScorer(clip_features(weights, device), aesthetic_head(weights), label=f"aesthetic-style, {LABEL}")


# ------------------------------------------------------------------------ accuracy
@torch.no_grad()
def predict(classifier: AttributeClassifier, images) -> dict[str, list[str]]:
    """Attribute names per image; `images` uint8 NHWC (numpy or tensor) or NCHW tensor."""
    x = torch.as_tensor(images)
    if x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    _, logits = classifier(x.contiguous())
    return {k: [names[i] for i in logits[k].argmax(-1).tolist()] for k, names in ATTRIBUTE_NAMES.items()}


def attribute_hits(classifier: AttributeClassifier, images, scenes: list[world.Scene]) -> dict[str, list[bool]]:
    """Per attribute, whether the judge names the scene's (main object's) value, image by image."""
    pred = predict(classifier, images)
    truth = {"shape": [s.main.shape for s in scenes], "colour": [s.main.colour for s in scenes],
             "position": [s.main.position for s in scenes], "size": [s.main.size for s in scenes],
             "background": [s.background for s in scenes], "kind": [s.kind for s in scenes]}
    return {k: [p == t for p, t in zip(pred[k], truth[k])] for k in ATTRIBUTE_NAMES}
