"""Every trained component's architecture: real diffusers / transformers classes, tiny sizes.

Why these sizes: the quality matrix runs 7 families x ~13 backends x 2 resolutions x 2
prompts in about 5 minutes on 2 cores, so one generation (20 steps, classifier-free
guidance) must stay well under a second on one thread, and the whole test bed trains in
about an hour on 2 cores. Within that, each model keeps what makes a backend act on it:

- VAE: three levels, so `vae_scale_factor` = 4 (32 px -> 8x8 latents, 64 px -> 16x16).
- UNets: three levels with cross-attention in the two lower ones, so DeepCache's branch 0
  skips real work and tomesd (max_downsample 2) finds attention to merge.
- Transformers: 6 blocks (PixArt, DiT, SD3), so the block caches have blocks to skip.
- Text: a CLIP "L" and "G" (hidden 64 each: SDXL concatenates them to 128, SD3 pads them
  to T5's 128) and a T5 of width 128. Sequences are 32 tokens (see text.py).

Constructors are seeded (`torch.manual_seed(seed)` before each), so an untrained component
is the same bytes everywhere; training starts from there.
"""
from __future__ import annotations

import torch

LATENT_CHANNELS = 4
CLIP_WIDTH = 64
T5_WIDTH = 128
NULL_CLASS = 1000  # DiTPipeline hard-codes 1000 as the unconditional class


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def vae(seed: int = 0):
    """A 3-level AutoencoderKL whose posterior starts nearly deterministic (see below)."""
    from diffusers import AutoencoderKL

    _seeded(seed)
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=32,
    )
    # Posterior log-variance starts at -8 (std 0.018) instead of ~0 (std 1): sampling noise of
    # the latents' own size would drown the reconstruction signal for the first thousands of
    # steps (measured: colours still wrong after 500 steps). Real VAEs end with a tiny std too.
    with torch.no_grad():
        model.quant_conv.weight[LATENT_CHANNELS:].zero_()
        model.quant_conv.bias[LATENT_CHANNELS:].fill_(-8.0)
    return model


def clip_text(vocab_size: int, bos: int, eos: int, seed: int = 0, layers: int = 4):
    """A CLIP text encoder with projection; the SD pipelines load its trunk as CLIPTextModel."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=CLIP_WIDTH,
        intermediate_size=4 * CLIP_WIDTH,
        projection_dim=CLIP_WIDTH,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=32,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
        hidden_act="gelu",
    )
    _seeded(seed)
    return CLIPTextModelWithProjection(config)


def t5_encoder(vocab_size: int, seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=T5_WIDTH,
        d_kv=32,
        d_ff=2 * T5_WIDTH,
        num_layers=3,
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,  # training is deterministic per step: no dropout anywhere
    )
    _seeded(seed)
    return T5EncoderModel(config)


# What the two UNets share (SD 1.x layout: Down, CrossAttnDown x2 / CrossAttnUp x2, Up).
_UNET = dict(sample_size=8, out_channels=LATENT_CHANNELS, layers_per_block=1, norm_num_groups=16,
             down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))


def sd_unet(in_channels: int = LATENT_CHANNELS, seed: int = 0):
    """SD 1.x layout at tiny width: Down, CrossAttnDown x2 / CrossAttnUp x2, Up; 8 heads."""
    from diffusers import UNet2DConditionModel

    _seeded(seed)
    return UNet2DConditionModel(in_channels=in_channels, block_out_channels=(32, 64, 64), cross_attention_dim=CLIP_WIDTH,
                                attention_head_dim=8, **_UNET)


SDXL_TIME_EMBED = 16


def sdxl_unet(seed: int = 0):
    """SDXL layout: text_time added conditioning (6 size ids + pooled CLIP-G), linear projections."""
    from diffusers import UNet2DConditionModel

    _seeded(seed)
    return UNet2DConditionModel(
        in_channels=LATENT_CHANNELS,
        block_out_channels=(32, 64, 96),
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 6),  # SDXL's head dim 64 at 1/10 the width: 16 per head
        use_linear_projection=True,
        cross_attention_dim=2 * CLIP_WIDTH,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED,
        projection_class_embeddings_input_dim=6 * SDXL_TIME_EMBED + CLIP_WIDTH,
        **_UNET,
    )


# What PixArt and DiT share: 6 DiT blocks of 6 heads x 16, 2x2 patches, no learned sigma.
_DIT_BLOCKS = dict(num_layers=6, patch_size=2, attention_head_dim=16, num_attention_heads=6,
                   in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, attention_bias=True,
                   activation_fn="gelu-approximate", norm_elementwise_affine=False)


def pixart_transformer(seed: int = 0):
    """PixArt-Sigma layout (adaLN-single, cross-attention to T5), 6 blocks, no learned sigma."""
    from diffusers import PixArtTransformer2DModel

    _seeded(seed)
    return PixArtTransformer2DModel(
        sample_size=8,
        caption_channels=T5_WIDTH,
        cross_attention_dim=96,
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_eps=1e-6,
        **_DIT_BLOCKS,
    )


def dit_transformer(seed: int = 0, sample_size: int = 8):
    """DiT layout (adaLN-zero, class labels), 6 blocks. `sample_size` sets the output size:
    DiTPipeline has no height/width, so a 64 px DiT is this module built with 16."""
    from diffusers import DiTTransformer2DModel

    _seeded(seed)
    return DiTTransformer2DModel(sample_size=sample_size, num_embeds_ada_norm=NULL_CLASS, norm_type="ada_norm_zero",
                                 **_DIT_BLOCKS)


def sd3_transformer(seed: int = 0):
    """SD3 MMDiT: joint attention over T5 + CLIP tokens and latent patches, pooled CLIP L+G."""
    from diffusers import SD3Transformer2DModel

    _seeded(seed)
    return SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=6,
        attention_head_dim=16,
        num_attention_heads=6,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=96,
        pooled_projection_dim=2 * CLIP_WIDTH,
        pos_embed_max_size=16,
    )


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
