"""Six tiny random-weight pipelines, built offline and shaped so that damage shows.

Why shaped: a diffusers test-sized UNet with default initialisation predicts noise with a
std of a few hundredths. Its scheduler then barely moves the latent, the image is
essentially the decoded starting noise, and skipping half the steps leaves SSIM at ~0.996:
a test bed built from such models cannot see an acceleration that breaks the denoiser.
Two calibrations, both done the way real checkpoints end up, make the denoiser matter:

1. **Unit-std noise prediction.** A trained eps-predictor outputs noise of std ~1 (that is
   what it is trained to regress). After the seeded initialisation we run the denoiser once
   on seeded calibration inputs (three timesteps) and rescale its output projection so the
   predicted eps has std 1. Every step then moves the latent as much as a real step does,
   so the image depends on every call of the denoiser.
2. **Unit-std latents.** Real SD's `scaling_factor` (0.18215) is 1/std of the VAE latents of
   its data. We do the same on a real photograph shipped with scikit-image, so the decoder
   sees latents in the range its encoder produces and the image is neither saturated nor
   flat.

Both factors are rounded (gain to a 1/8-octave grid, scaling factor to 3 significant
digits), so thread count or BLAS rounding in the calibration pass cannot change the built
weights. Everything is seeded (`torch.manual_seed(0)` before each component, like
diffusers' own `get_dummy_components`), so the same recipe gives the same bytes; bump
`RECIPE_VERSION` whenever a builder changes, so cached builds are not reused.

Tokenizers are built offline: the real CLIP BPE vocabulary shipped in the open_clip wheel
gives the exact openai CLIP tokenizer (49408 tokens); the T5 tokenizer is a Unigram model
whose pieces come from the same vocabulary, so prompts tokenize into distinct real words.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from accelgate.models.tokenizers import clip_tokenizer, t5_tokenizer

RECIPE_VERSION = "1"

_LATENT_CHANNELS = 4
_GAIN_STEPS_PER_OCTAVE = 8


# --------------------------------------------------------------------------- calibration
def _quantized_gain(std: float) -> float:
    """1/std on a 1/8-octave grid, so the calibration's last bits never reach the weights."""
    return 2.0 ** (round(-math.log2(std) * _GAIN_STEPS_PER_OCTAVE) / _GAIN_STEPS_PER_OCTAVE)


@torch.no_grad()
def _rescale_output(layer: torch.nn.Module, predict: Callable[[], torch.Tensor]) -> float:
    """Scale `layer` (the denoiser's last projection) so `predict()`'s eps has unit std."""
    gain = _quantized_gain(float(predict().double().std()))
    layer.weight.mul_(gain)
    if layer.bias is not None:
        layer.bias.mul_(gain)
    return gain


def _calibration_batch(sample_size: int, channels: int = _LATENT_CHANNELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded latents at three timesteps (early, mid, late in a 1000-step schedule)."""
    g = torch.Generator().manual_seed(1234)
    latents = torch.randn(3, channels, sample_size, sample_size, generator=g)
    return latents, torch.tensor([900, 500, 100])


@functools.lru_cache(maxsize=1)
def _reference_photo() -> np.ndarray:
    """scikit-image's astronaut photograph, 64x64, in [-1, 1] (ships in the wheel: offline)."""
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.astronaut()).resize((64, 64), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 127.5 - 1.0


@torch.no_grad()
def _vae():
    """A two-level VAE (scale factor 2), scaling_factor = 1/std of a real photo's latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=_LATENT_CHANNELS,
        norm_num_groups=2,
        sample_size=64,
    )
    photo = torch.from_numpy(_reference_photo()).permute(2, 0, 1)[None]
    std = float(vae.encode(photo).latent_dist.mean.double().std())
    vae.register_to_config(scaling_factor=float(f"{1.0 / std:.3g}"))
    return vae.eval()


# --------------------------------------------------------------------------- text encoders
def _clip_text_encoder(with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=32,
        intermediate_size=37,
        projection_dim=32,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=77,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
    )
    torch.manual_seed(0)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def _t5_encoder(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(0)
    return T5EncoderModel(config).eval()


# --------------------------------------------------------------------------- denoisers
def _sd_unet(in_channels: int = 4, sample_size: int = 32):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=_LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    ).eval()
    latents, t = _calibration_batch(sample_size, in_channels)
    context = torch.randn(3, 77, 32, generator=torch.Generator().manual_seed(99))
    _rescale_output(unet.conv_out, lambda: unet(latents, t, encoder_hidden_states=context).sample)
    return unet


def _sdxl_unet(sample_size: int = 32):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4),
        layers_per_block=2,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + 32 pooled text
        cross_attention_dim=64,  # two text encoders of width 32, concatenated
        norm_num_groups=1,
    ).eval()
    latents, t = _calibration_batch(sample_size)
    g = torch.Generator().manual_seed(99)
    context = torch.randn(3, 77, 64, generator=g)
    added = {
        "text_embeds": torch.randn(3, 32, generator=g),
        "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]).repeat(3, 1),
    }
    _rescale_output(
        unet.conv_out, lambda: unet(latents, t, encoder_hidden_states=context, added_cond_kwargs=added).sample
    )
    return unet


# What the two tiny transformers share (PixArt and DiT are both DiT-style, 2 blocks, 2x2 patches).
_TRANSFORMER = dict(num_layers=2, patch_size=2, attention_head_dim=8, in_channels=4, out_channels=8,
                    attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                    norm_elementwise_affine=False)


def _pixart_transformer(sample_size: int = 32):
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=sample_size, num_attention_heads=3, caption_channels=32, cross_attention_dim=24,
        norm_type="ada_norm_single", norm_eps=1e-6, **_TRANSFORMER,
    ).eval()
    latents, t = _calibration_batch(sample_size)
    context = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(99))
    added = {"resolution": None, "aspect_ratio": None}

    def predict():
        out = transformer(latents, encoder_hidden_states=context, timestep=t, added_cond_kwargs=added).sample
        return out[:, :_LATENT_CHANNELS]  # the second half is the learned variance

    _rescale_output(transformer.proj_out, predict)
    return transformer


def _dit_transformer(sample_size: int = 32):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(
        sample_size=sample_size, num_attention_heads=2, norm_type="ada_norm_zero", **_TRANSFORMER,
    ).eval()
    latents, t = _calibration_batch(sample_size)
    labels = torch.tensor([1, 207, 1000])  # two classes and the null class of guidance

    def predict():
        return transformer(latents, timestep=t, class_labels=labels).sample[:, :_LATENT_CHANNELS]

    _rescale_output(transformer.proj_out_2, predict)
    return transformer


# --------------------------------------------------------------------------- schedulers
def _sd_scheduler():
    """SD 1.x training schedule (scaled_linear 0.00085..0.012), DDIM as in diffusers' tests."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _sdxl_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )


def _dit_scheduler():
    """DiT / PixArt training schedule (linear 0.0001..0.02), x0 not clipped (latent space)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(clip_sample=False)


def _pixart_scheduler():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler()


# --------------------------------------------------------------------------- pipelines
def _sd_components(unet_in_channels: int = 4) -> dict[str, Any]:
    return {
        "unet": _sd_unet(unet_in_channels),
        "scheduler": _sd_scheduler(),
        "vae": _vae(),
        "text_encoder": _clip_text_encoder(),
        "tokenizer": clip_tokenizer(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def build_tiny_sd():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**_sd_components())


def build_tiny_sd_img2img():
    from diffusers import StableDiffusionImg2ImgPipeline

    return StableDiffusionImg2ImgPipeline(**_sd_components())


def build_tiny_pix2pix():
    """InstructPix2Pix: the UNet sees 8 channels (noisy latent + encoded input image)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    return StableDiffusionInstructPix2PixPipeline(**_sd_components(unet_in_channels=8))


def build_tiny_sdxl():
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(
        unet=_sdxl_unet(),
        scheduler=_sdxl_scheduler(),
        vae=_vae(),
        text_encoder=_clip_text_encoder(),
        text_encoder_2=_clip_text_encoder(with_projection=True),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        add_watermarker=False,
    )


def build_tiny_pixart():
    from diffusers import PixArtSigmaPipeline

    tokenizer = t5_tokenizer()
    return PixArtSigmaPipeline(
        tokenizer=tokenizer,
        text_encoder=_t5_encoder(len(tokenizer)),
        vae=_vae(),
        transformer=_pixart_transformer(),
        scheduler=_pixart_scheduler(),
    )


def build_tiny_dit():
    from diffusers import DiTPipeline

    return DiTPipeline(transformer=_dit_transformer(), vae=_vae(), scheduler=_dit_scheduler())
