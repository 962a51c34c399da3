"""Training of the six denoisers on the VAE's latents of world scenes.

Objectives follow the real families where a tiny budget allows: epsilon prediction on the
SD/SDXL schedule (scaled_linear), v prediction on the PixArt/DiT schedule (linear; see
build.py for why not epsilon there), both with min-SNR-5 loss weighting (Hang et al. 2023: the same optimum, faster convergence for
small budgets), and rectified flow for SD3 (x_t = (1 - s) x0 + s n, target n - x0, sigmas
from a logit-normal, as SD3 trains). Conditioning is dropped in 10% of samples so
classifier-free guidance works, and dropped the way each pipeline builds its unconditional
input: the empty prompt's encoding (SD, PixArt, SD3, pix2pix), zeros (SDXL's
`force_zeros_for_empty_prompt`), class 1000 (DiT). InstructPix2Pix drops text, image and
both in 5% each, and conditions on the *unscaled* posterior mean of the input, exactly what
its pipeline concatenates.

Three quarters of the steps train at 32 px (8x8 latents, batch 32), one quarter at 64 px
(16x16, batch 16). The DiT trains with its patch grid's base size equal to the grid, which
is what a DiT built for that size (DiTPipeline has no height/width) computes.
"""
from __future__ import annotations

import hashlib
import zlib

import torch
import torch.nn.functional as F

from accelgate.testbed import architectures, build, data, text
from accelgate.testbed.encoders import scene_pools
from accelgate.testbed.training import Budget, Component, Context

DROP = 0.1


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class Denoiser(Component):
    requires = ("vae", "text")
    betas: dict | None = build.SD_BETAS  # None: rectified flow
    prediction = "epsilon"  # or "v_prediction" (DDPM schedules only)
    single_only = False
    batch = {32: 32, 64: 16}

    # -- set up ----------------------------------------------------------------------------
    def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        vae = build.load_vae(ctx.out)
        self.scale = vae.config.scaling_factor
        self.shift = vae.config.shift_factor if self.betas is None else 0.0
        key = _sha(next((ctx.out / build.VAE).glob("*.safetensors")))
        self.latents, self.pools = self.latent_pools(ctx, vae, key)
        if self.betas is not None:
            from diffusers import DDPMScheduler

            self.alphas_cumprod = DDPMScheduler(**self.betas).alphas_cumprod.float()
        self.clip_tok = build.load_clip_tokenizer(ctx.out)
        self.model = self.make_model()

    def latent_pools(self, ctx, vae, key):
        pools = scene_pools(ctx)
        latents = {s: data.cached(ctx.work, f"latents{s}-{key}", lambda p=p: data.encode(vae, p.images))
                   for s, p in pools.items()}
        if self.single_only:
            keep = {s: p.single.nonzero().flatten() for s, p in pools.items()}
            return {s: latents[s][keep[s]] for s in pools}, {s: (pools[s], keep[s]) for s in pools}
        return latents, {s: (p, None) for s, p in pools.items()}

    def make_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def modules(self):
        return {"model": self.model}

    def export(self, ctx: Context, modules) -> None:
        modules["model"].to(torch.float16).save_pretrained(ctx.out / self.folder)

    # -- one step --------------------------------------------------------------------------
    def sample(self, step: int):
        size = 64 if step % 4 == 3 else 32
        latents = self.latents[size]
        key = zlib.crc32(self.name.encode())  # stable across processes, unlike hash()
        idx = data.batch_indices(latents.shape[0], self.ctx.batch(self.batch[size]), self.ctx.seed, key, step)
        pool, keep = self.pools[size]
        rows = keep[idx] if keep is not None else idx
        x0 = (latents[idx] - self.shift) * self.scale
        gen = data.step_generator(self.ctx.seed, key, step)
        return size, rows, pool, x0, gen

    def noised(self, x0: torch.Tensor, gen: torch.Generator):
        """x_t, the model's timestep input, the regression target and the per-sample weight."""
        noise = torch.randn(x0.shape, generator=gen)
        n = x0.shape[0]
        if self.betas is None:
            sigma = torch.sigmoid(torch.randn(n, generator=gen))
            s = sigma.view(-1, 1, 1, 1)
            return (1 - s) * x0 + s * noise, sigma * 1000, noise - x0, torch.ones(n)
        t = torch.randint(0, 1000, (n,), generator=gen)
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        snr = self.alphas_cumprod[t] / (1 - self.alphas_cumprod[t])
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        if self.prediction == "v_prediction":  # v = alpha eps - sigma x0; min-SNR weight for v
            return xt, t, ab.sqrt() * noise - (1 - ab).sqrt() * x0, snr.clamp(max=5.0) / (snr + 1)
        return xt, t, noise, snr.clamp(max=5.0) / snr

    def loss(self, step: int) -> torch.Tensor:
        size, rows, pool, x0, gen = self.sample(step)
        xt, t, target, weight = self.noised(x0, gen)
        drop = torch.rand(x0.shape[0], generator=gen) < DROP
        pred = self.predict(xt, t, rows, pool, drop, size, gen)
        per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        return (weight * per_sample).mean()

    def predict(self, xt, t, rows, pool, drop, size, gen) -> torch.Tensor:
        raise NotImplementedError

    # -- text ------------------------------------------------------------------------------
    def captions(self, rows, pool, drop) -> list[str]:
        return ["" if d else pool.captions[int(r)] for r, d in zip(rows, drop)]

    def clip_ids(self, texts: list[str]) -> torch.Tensor:
        return self.clip_tok(texts, padding="max_length", max_length=self.clip_tok.model_max_length,
                             truncation=True, return_tensors="pt").input_ids


class SdUnet(Denoiser):
    name, folder = "sd", build.UNET_SD
    budget = Budget(steps=4000, lr=1e-3, warmup=200, ema=0.999)

    def make_model(self):
        self.text_encoder = build.load_clip_text(build.CLIP_L, weights=self.ctx.out).requires_grad_(False)
        return architectures.sd_unet(seed=self.ctx.seed + 10)

    def predict(self, xt, t, rows, pool, drop, size, gen):
        with torch.no_grad():
            context = self.text_encoder(self.clip_ids(self.captions(rows, pool, drop)))[0]
        return self.model(xt, t, encoder_hidden_states=context).sample


class SdxlUnet(Denoiser):
    name, folder = "sdxl", build.UNET_SDXL
    budget = Budget(steps=3500, lr=1e-3, warmup=200, ema=0.999)

    def make_model(self):
        self.enc_l = build.load_clip_text(build.CLIP_L, weights=self.ctx.out).requires_grad_(False)
        self.enc_g = build.load_clip_text(build.CLIP_G, projection=True, weights=self.ctx.out).requires_grad_(False)
        return architectures.sdxl_unet(seed=self.ctx.seed + 11)

    def predict(self, xt, t, rows, pool, drop, size, gen):
        with torch.no_grad():
            ids = self.clip_ids(self.captions(rows, pool, drop))
            out_l = self.enc_l(ids, output_hidden_states=True)
            out_g = self.enc_g(ids, output_hidden_states=True)
            context = torch.cat([out_l.hidden_states[-2], out_g.hidden_states[-2]], dim=-1)
            pooled = out_g.text_embeds
            keep = (~drop).float()
            context, pooled = context * keep.view(-1, 1, 1), pooled * keep.view(-1, 1)  # zeros for empty prompts
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32).repeat(xt.shape[0], 1)
        return self.model(xt, t, encoder_hidden_states=context,
                          added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample


class PixartTransformer(Denoiser):
    name, folder = "pixart", build.PIXART
    betas, prediction = build.DIT_BETAS, "v_prediction"
    budget = Budget(steps=4000, lr=1e-3, warmup=200, ema=0.999)

    def make_model(self):
        self.t5 = build.load_t5(self.ctx.out).requires_grad_(False)
        self.t5_tok = build.load_t5_tokenizer(self.ctx.out)
        return architectures.pixart_transformer(seed=self.ctx.seed + 12)

    def predict(self, xt, t, rows, pool, drop, size, gen):
        with torch.no_grad():
            tokens = self.t5_tok(self.captions(rows, pool, drop), padding="max_length", max_length=text.T5_MAX_LENGTH,
                                 truncation=True, return_tensors="pt")
            context = self.t5(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
        return self.model(xt, encoder_hidden_states=context, encoder_attention_mask=tokens.attention_mask,
                          timestep=t, added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample


class DitTransformer(Denoiser):
    name, folder = "dit", build.DIT
    betas, prediction = build.DIT_BETAS, "v_prediction"
    single_only = True
    budget = Budget(steps=3500, lr=1e-3, warmup=200, ema=0.999)

    def make_model(self):
        return architectures.dit_transformer(seed=self.ctx.seed + 13)

    def predict(self, xt, t, rows, pool, drop, size, gen):
        labels = pool.labels[rows].clone()
        labels[drop] = architectures.NULL_CLASS
        patch = self.model.config.patch_size
        self.model.pos_embed.base_size = xt.shape[-1] // patch  # as a DiT built for this size
        return self.model(xt, timestep=t, class_labels=labels).sample

    def export(self, ctx: Context, modules) -> None:
        modules["model"].pos_embed.base_size = modules["model"].config.sample_size // modules["model"].config.patch_size
        super().export(ctx, modules)


class Sd3Transformer(Denoiser):
    name, folder = "sd3", build.SD3
    betas = None
    budget = Budget(steps=4000, lr=1e-3, warmup=200, ema=0.999)

    def make_model(self):
        out = self.ctx.out
        self.enc_l = build.load_clip_text(build.CLIP_L, projection=True, weights=out).requires_grad_(False)
        self.enc_g = build.load_clip_text(build.CLIP_G, projection=True, weights=out).requires_grad_(False)
        self.t5 = build.load_t5(out).requires_grad_(False)
        self.t5_tok = build.load_t5_tokenizer(out)
        return architectures.sd3_transformer(seed=self.ctx.seed + 14)

    def predict(self, xt, t, rows, pool, drop, size, gen):
        with torch.no_grad():
            texts = self.captions(rows, pool, drop)
            ids = self.clip_ids(texts)
            out_l = self.enc_l(ids, output_hidden_states=True)
            out_g = self.enc_g(ids, output_hidden_states=True)
            clip = torch.cat([out_l.hidden_states[-2], out_g.hidden_states[-2]], dim=-1)
            clip = F.pad(clip, (0, architectures.T5_WIDTH - clip.shape[-1]))
            t5_ids = self.t5_tok(texts, padding="max_length", max_length=text.T5_MAX_LENGTH, truncation=True,
                                 return_tensors="pt").input_ids
            context = torch.cat([clip, self.t5(t5_ids)[0]], dim=1)  # SD3 passes no mask to T5 or the MMDiT
            pooled = torch.cat([out_l.text_embeds, out_g.text_embeds], dim=-1)
        return self.model(xt, encoder_hidden_states=context, pooled_projections=pooled, timestep=t).sample


class Pix2PixUnet(Denoiser):
    """InstructPix2Pix: the SD UNet with 4 more input channels (zero-initialised) on edit triples."""

    name, folder = "pix2pix", build.UNET_PIX2PIX
    requires = ("vae", "text", "sd")
    budget = Budget(steps=2500, lr=5e-4, warmup=100, ema=0.999)
    pool_size = {32: 8000, 64: 2000}

    def latent_pools(self, ctx, vae, key):
        out = {}
        for size, n in ((s, ctx.pool(n)) for s, n in self.pool_size.items()):
            pool = data.cached(ctx.work, f"edits{size}-{n}", lambda s=size, n=n: data.edit_pool(s, n))
            src = data.cached(ctx.work, f"editsrc{size}-{n}-{key}", lambda p=pool: data.encode(vae, p.sources))
            tgt = data.cached(ctx.work, f"edittgt{size}-{n}-{key}", lambda p=pool: data.encode(vae, p.targets))
            out[size] = (pool, src, tgt)
        self.edit_sources = {s: v[1] for s, v in out.items()}
        return {s: v[2] for s, v in out.items()}, {s: (v[0], None) for s, v in out.items()}

    def make_model(self):
        self.text_encoder = build.load_clip_text(build.CLIP_L, weights=self.ctx.out).requires_grad_(False)
        sd = build.load_denoiser(build.UNET_SD, self.ctx.out)
        model = architectures.sd_unet(in_channels=8, seed=self.ctx.seed + 15)
        state = sd.state_dict()
        weight = torch.zeros_like(model.conv_in.weight)
        weight[:, :4] = state["conv_in.weight"]
        state["conv_in.weight"] = weight
        model.load_state_dict(state)
        return model

    def predict(self, xt, t, rows, pool, drop, size, gen):
        r = torch.rand(xt.shape[0], generator=gen)
        drop_text = r < 0.10  # 0..0.05 text only, 0.05..0.10 both
        drop_image = (r >= 0.05) & (r < 0.15)  # 0.10..0.15 image only
        texts = ["" if d else pool.instructions[int(i)] for i, d in zip(rows, drop_text)]
        with torch.no_grad():
            context = self.text_encoder(self.clip_ids(texts))[0]
        source = self.edit_sources[size][rows] * (~drop_image).float().view(-1, 1, 1, 1)
        return self.model(torch.cat([xt, source], dim=1), t, encoder_hidden_states=context).sample


DENOISERS = (SdUnet, SdxlUnet, Pix2PixUnet, PixartTransformer, DitTransformer, Sd3Transformer)
