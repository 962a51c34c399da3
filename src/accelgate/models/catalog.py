"""The model catalog: six embedded tiny pipelines (CPU, offline) and the seeds' real models.

Tiny models run 5 steps on two prompts at 32 and 64 px, which keeps the whole CPU matrix
in a few minutes. Real models carry the settings the seed documents used (resolutions,
steps, scheduler, seed, prompts) and are marked `gpu`.
"""
from __future__ import annotations

from accelgate.models.registry import ModelSpec, register
from accelgate.registry import frozen_mapping

TINY_RESOLUTIONS = ((32, 32), (64, 64))
TINY = "accelgate.models.tiny:"  # builders are named, imported only when a model is built

register(ModelSpec(
    id="tiny-sd", task="text-to-image", pipeline_class="StableDiffusionPipeline", denoiser="unet",
    source="tiny", builder=TINY + "build_tiny_sd", resolutions=TINY_RESOLUTIONS, steps=5, guidance_scale=5.0,
    prompt_set="parti-sample", prompt_limit=2, description="tiny Stable Diffusion 1.x, random weights",
))
register(ModelSpec(
    id="tiny-sdxl", task="text-to-image", pipeline_class="StableDiffusionXLPipeline", denoiser="unet",
    source="tiny", builder=TINY + "build_tiny_sdxl", resolutions=TINY_RESOLUTIONS, steps=5, guidance_scale=5.0,
    prompt_set="parti-sample", prompt_limit=2, description="tiny SDXL (two text encoders), random weights",
))
register(ModelSpec(
    id="tiny-sd-img2img", task="image-to-image", pipeline_class="StableDiffusionImg2ImgPipeline", denoiser="unet",
    source="tiny", builder=TINY + "build_tiny_sd_img2img", resolutions=TINY_RESOLUTIONS, steps=8, guidance_scale=5.0,
    # strength below 1: the input image shapes the result (4 of 8 steps run), so a backend
    # that ignores `strength` (runs every step from pure noise) changes the image
    prompt_set="img2img-photos", prompt_limit=2, call_kwargs=frozen_mapping({"strength": 0.6}),
    description="tiny SD image-to-image on scikit-image photographs, strength 0.6",
))
register(ModelSpec(
    id="tiny-pix2pix", task="edit", pipeline_class="StableDiffusionInstructPix2PixPipeline", denoiser="unet",
    source="tiny", builder=TINY + "build_tiny_pix2pix", resolutions=TINY_RESOLUTIONS, steps=5, guidance_scale=7.5,
    prompt_set="pix2pix-edit", prompt_limit=2, call_kwargs=frozen_mapping({"image_guidance_scale": 1.5}),
    description="tiny InstructPix2Pix (8-channel UNet) on scikit-image photographs",
))
register(ModelSpec(
    id="tiny-pixart", task="text-to-image", pipeline_class="PixArtSigmaPipeline", denoiser="transformer",
    source="tiny", builder=TINY + "build_tiny_pixart", resolutions=TINY_RESOLUTIONS, steps=5, guidance_scale=4.5,
    prompt_set="parti-sample", prompt_limit=2,
    call_kwargs=frozen_mapping({"use_resolution_binning": False, "clean_caption": False}),
    description="tiny PixArt-Sigma (T5 text encoder, DiT-style transformer)",
))
register(ModelSpec(
    id="tiny-dit", task="class-conditional", pipeline_class="DiTPipeline", denoiser="transformer",
    source="tiny", builder=TINY + "build_tiny_dit", resolutions=TINY_RESOLUTIONS, steps=5, guidance_scale=4.0,
    prompt_set="imagenet-classes", prompt_limit=2, description="tiny class-conditional DiT",
))

# -- real models (seeds 000-004), loaded offline from the HF cache or a configured path --
register(ModelSpec(
    id="sd15", task="text-to-image", pipeline_class="StableDiffusionPipeline", denoiser="unet", source="hub",
    repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5", resolutions=((512, 512),), steps=30,
    guidance_scale=7.5, dtype="float16", prompt_set="diffusers-guide", gpu=True,
    description="Stable Diffusion 1.5 (diffusers evaluation guide, seed 003)",
))
register(ModelSpec(
    id="sd21", task="text-to-image", pipeline_class="StableDiffusionPipeline", denoiser="unet", source="hub",
    repo_id="stabilityai/stable-diffusion-2-1", resolutions=((768, 768), (512, 512)), steps=20,
    guidance_scale=7.5, dtype="float16", prompt_set="sd2", gpu=True,
    description="Stable Diffusion 2.1 with OneDiff's nexfort settings (seed 004)",
))
register(ModelSpec(
    id="sdxl-realvis", task="text-to-image", pipeline_class="StableDiffusionXLPipeline", denoiser="unet",
    source="hub", repo_id="SG161222/RealVisXL_V4.0", resolutions=((1024, 1024), (512, 512)), steps=30,
    guidance_scale=7.5, dtype="float16", scheduler="EulerAncestralDiscreteScheduler", seed=333,
    prompt_set="realvis", gpu=True, description="SDXL RealVisXL V4.0, OneDiff benchmark defaults (seed 002)",
))
register(ModelSpec(
    id="kolors", task="text-to-image", pipeline_class="KolorsPipeline", denoiser="unet", source="hub",
    repo_id="Kwai-Kolors/Kolors-diffusers", variant="fp16", resolutions=((1024, 1024),), steps=50,
    guidance_scale=5.0, dtype="float16", prompt_set="kolors", gpu=True,
    description="Kolors with the Chinese prompts of OneDiff's quality evaluation (seed 000)",
))
register(ModelSpec(
    id="pixart-sigma", task="text-to-image", pipeline_class="PixArtSigmaPipeline", denoiser="transformer",
    source="hub", repo_id="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", resolutions=((1024, 1024),), steps=20,
    guidance_scale=4.5, dtype="float16", prompt_set="parti-sample", gpu=True,
    call_kwargs=frozen_mapping({"clean_caption": False}), description="PixArt-Sigma XL 1024",
))
register(ModelSpec(
    id="pix2pix", task="edit", pipeline_class="StableDiffusionInstructPix2PixPipeline", denoiser="unet",
    source="hub", repo_id="timbrooks/instruct-pix2pix", resolutions=((512, 512), (1024, 1024)), steps=10,
    guidance_scale=7.5, dtype="float16", prompt_set="pix2pix-edit", gpu=True,
    call_kwargs=frozen_mapping({"image_guidance_scale": 1.5}),
    description="InstructPix2Pix (benchmark report seed 002, directional similarity seed 003)",
))
register(ModelSpec(
    id="dit-xl-2-256", task="class-conditional", pipeline_class="DiTPipeline", denoiser="transformer",
    source="hub", repo_id="facebook/DiT-XL-2-256", resolutions=((256, 256),), steps=25, guidance_scale=4.0,
    dtype="float16", scheduler="DPMSolverMultistepScheduler", prompt_set="imagenet-classes", gpu=True,
    description="DiT-XL-2 256 with the guide's ImageNet classes (seed 003)",
))
