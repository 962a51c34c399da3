"""Assemble the trained components into real diffusers pipelines.

Why here and not in each family's model: the components are stored once (one VAE, one
CLIP-L, one CLIP-G, one T5, one folder per denoiser) and shared, like the real families
share a VAE or a text encoder. A pipeline is built in memory from them; callers that need
the loading path (`save_pretrained` + `from_pretrained`) save it themselves, as the catalog
does for every tiny model.

Weights are stored in float16 where precision does not matter (every denoiser and encoder)
and always loaded as float32: the eager reference runs float32.

Recommended call settings per family (measured in benchmarks/testbed.md) are in `FAMILIES`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

WEIGHTS = Path(__file__).parent / "weights"

# folder of each stored component under the weights directory
VAE, CLIP_L, CLIP_G, T5 = "vae", "text_encoder_l", "text_encoder_g", "text_encoder_t5"
TOKENIZER_CLIP, TOKENIZER_T5 = "tokenizer_clip", "tokenizer_t5"
UNET_SD, UNET_SDXL, UNET_PIX2PIX = "unet_sd", "unet_sdxl", "unet_pix2pix"
PIXART, DIT, SD3 = "transformer_pixart", "transformer_dit", "transformer_sd3"


# ------------------------------------------------------------------------------ schedulers
# The training noise schedules: SD 1.x / SDXL (scaled_linear 0.00085..0.012, epsilon
# prediction, as the real ones) and DiT / PixArt (linear 0.0001..0.02, v prediction: with
# that schedule x0 = (x_t - sigma eps) / alpha amplifies an epsilon error ~150x at the first
# step, and a tiny epsilon-DiT at 1500 steps made fragmented images with a final latent std
# of 2.3-2.6 against ~1 for the world); SD3: rectified flow.
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
DIT_BETAS = {"beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "num_train_timesteps": 1000}
FLOW_SHIFT = 1.0


def sd_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                         prediction_type="epsilon")


def sdxl_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**SD_BETAS, steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")


def pix2pix_scheduler():
    from diffusers import EulerAncestralDiscreteScheduler

    return EulerAncestralDiscreteScheduler(**SD_BETAS, steps_offset=1, prediction_type="epsilon")


def pixart_scheduler():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(**DIT_BETAS, prediction_type="v_prediction")


def dit_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**DIT_BETAS, clip_sample=False, prediction_type="v_prediction")


def sd3_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=FLOW_SHIFT)


# ------------------------------------------------------------------------------ components
def _dir(name: str, weights: Path | None) -> Path:
    path = Path(weights or WEIGHTS) / name
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: missing test-bed component; train it with "
                                "`python -m accelgate.testbed.train` (see accelgate/testbed/__init__.py)")
    return path


def load_vae(weights: Path | None = None):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(_dir(VAE, weights), torch_dtype=torch.float32).eval()


def load_clip_text(name: str = CLIP_L, projection: bool = False, weights: Path | None = None):
    """A stored CLIP text encoder as CLIPTextModelWithProjection, or its trunk as CLIPTextModel."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection
    from transformers.utils import logging

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the trunk alone leaves the projection unused: expected, not news
    try:
        return cls.from_pretrained(_dir(name, weights), dtype=torch.float32).eval()
    finally:
        logging.set_verbosity(verbosity)


def load_t5(weights: Path | None = None):
    from transformers import T5EncoderModel

    return T5EncoderModel.from_pretrained(_dir(T5, weights), dtype=torch.float32).eval()


def load_clip_tokenizer(weights: Path | None = None):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(_dir(TOKENIZER_CLIP, weights))


def load_t5_tokenizer(weights: Path | None = None):
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(_dir(TOKENIZER_T5, weights))


def load_denoiser(name: str, weights: Path | None = None, **config_overrides):
    import diffusers

    cls = {UNET_SD: "UNet2DConditionModel", UNET_SDXL: "UNet2DConditionModel", UNET_PIX2PIX: "UNet2DConditionModel",
           PIXART: "PixArtTransformer2DModel", DIT: "DiTTransformer2DModel", SD3: "SD3Transformer2DModel"}[name]
    return getattr(diffusers, cls).from_pretrained(_dir(name, weights), torch_dtype=torch.float32,
                                                   **config_overrides).eval()


# ------------------------------------------------------------------------------- pipelines
@dataclass(frozen=True)
class Family:
    """How a family is built and called: what phase 2 puts in the catalog."""

    id: str
    pipeline: str
    task: str
    steps: int = 20
    guidance_scale: float = 5.0
    call_kwargs: dict[str, Any] = field(default_factory=dict)


FAMILIES = {
    "tiny-sd": Family("tiny-sd", "StableDiffusionPipeline", "text-to-image"),
    "tiny-sdxl": Family("tiny-sdxl", "StableDiffusionXLPipeline", "text-to-image"),
    "tiny-sd-img2img": Family("tiny-sd-img2img", "StableDiffusionImg2ImgPipeline", "image-to-image",
                              call_kwargs={"strength": 0.75}),
    "tiny-pix2pix": Family("tiny-pix2pix", "StableDiffusionInstructPix2PixPipeline", "edit", guidance_scale=5.0,
                           call_kwargs={"image_guidance_scale": 1.5}),
    "tiny-pixart": Family("tiny-pixart", "PixArtSigmaPipeline", "text-to-image", guidance_scale=4.5,
                          call_kwargs={"use_resolution_binning": False, "clean_caption": False,
                                       "max_sequence_length": 32}),
    "tiny-dit": Family("tiny-dit", "DiTPipeline", "class-conditional", guidance_scale=4.0),
    "tiny-sd3": Family("tiny-sd3", "StableDiffusion3Pipeline", "text-to-image", guidance_scale=5.0,
                       call_kwargs={"max_sequence_length": 32}),
}


def build(family: str, weights: Path | None = None, resolution: int = 32):
    """The pipeline of one family from the stored components (float32, eval, on CPU).

    `resolution` only matters for DiT, whose pipeline has no height/width: its transformer
    is built for that size (config and patch embedding agree, so a save/reload is exact).
    """
    import diffusers

    if family not in FAMILIES:
        raise KeyError(f"unknown test-bed family {family!r}; known: {', '.join(FAMILIES)}")
    cls = getattr(diffusers, FAMILIES[family].pipeline)
    vae = load_vae(weights)
    if family in ("tiny-sd", "tiny-sd-img2img", "tiny-pix2pix"):
        unet = load_denoiser(UNET_PIX2PIX if family == "tiny-pix2pix" else UNET_SD, weights)
        scheduler = pix2pix_scheduler() if family == "tiny-pix2pix" else sd_scheduler()
        return cls(vae=vae, text_encoder=load_clip_text(CLIP_L, weights=weights),
                   tokenizer=load_clip_tokenizer(weights), unet=unet, scheduler=scheduler, safety_checker=None,
                   feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    if family == "tiny-sdxl":
        tokenizer = load_clip_tokenizer(weights)
        return cls(vae=vae, text_encoder=load_clip_text(CLIP_L, weights=weights),
                   text_encoder_2=load_clip_text(CLIP_G, projection=True, weights=weights), tokenizer=tokenizer,
                   tokenizer_2=tokenizer, unet=load_denoiser(UNET_SDXL, weights), scheduler=sdxl_scheduler(),
                   force_zeros_for_empty_prompt=True, add_watermarker=False)
    if family == "tiny-pixart":
        return cls(vae=vae, text_encoder=load_t5(weights), tokenizer=load_t5_tokenizer(weights),
                   transformer=load_denoiser(PIXART, weights), scheduler=pixart_scheduler())
    if family == "tiny-dit":
        transformer = load_denoiser(DIT, weights, sample_size=resolution // 4)
        return cls(vae=vae, transformer=transformer, scheduler=dit_scheduler())
    tokenizer = load_clip_tokenizer(weights)
    return cls(vae=vae, text_encoder=load_clip_text(CLIP_L, projection=True, weights=weights),
               text_encoder_2=load_clip_text(CLIP_G, projection=True, weights=weights),
               text_encoder_3=load_t5(weights), tokenizer=tokenizer, tokenizer_2=tokenizer,
               tokenizer_3=load_t5_tokenizer(weights), transformer=load_denoiser(SD3, weights),
               scheduler=sd3_scheduler())


def call_arguments(family: str, item, resolution: int, generator, steps: int | None = None,
                   guidance_scale: float | None = None) -> dict[str, Any]:
    """Keyword arguments of one generation of `item` (a world.EvalItem) at `resolution`."""
    from PIL import Image

    from accelgate.testbed import world

    spec = FAMILIES[family]
    kwargs: dict[str, Any] = {"num_inference_steps": steps or spec.steps, "generator": generator,
                              "guidance_scale": spec.guidance_scale if guidance_scale is None else guidance_scale,
                              "output_type": "np", **spec.call_kwargs}
    if spec.task == "class-conditional":
        kwargs["class_labels"] = [item.class_label]
        return kwargs
    if spec.task == "text-to-image":
        kwargs.update(prompt=item.caption, height=resolution, width=resolution)
        return kwargs
    kwargs["image"] = Image.fromarray(world.render(item.edit.source, resolution))
    kwargs["prompt"] = item.edit.instruction if spec.task == "edit" else item.edit.target.caption()
    return kwargs
