"""Training of the shared components: the VAE and the three text encoders.

VAE: reconstruction (L1 + MSE) with a small KL term on world scenes at 32 px (batch 16;
64 px, batch 4, in one step of four), then `scaling_factor` = 1 / std and `shift_factor` = mean of the posterior
means of 2048 training scenes, as real SD / SD3 VAEs are calibrated. Denoisers train on the
posterior means (`data.encode`), the pipelines' `mode()` of the same distribution.

Text encoders: CLIP-L, CLIP-G (both CLIPTextModelWithProjection, different seeds and
depths) and T5 learn to name every attribute slot of a caption or edit instruction
(`text.SLOTS`) from their pooled output: CLIP from its projected end-of-text embedding (what
SDXL / SD3 feed the denoiser as `pooled` / `text_embeds`), T5 from the mean of its
unmasked tokens. The slot heads are discarded; the denoisers then read token features that
are known to carry the whole caption.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from accelgate.testbed import architectures, build, data, text
from accelgate.testbed.training import Budget, Component, Context

VAE_POOL = {32: 24000, 64: 6000}
KL_WEIGHT = 1e-5


def scene_pools(ctx: Context) -> dict[int, data.ScenePool]:
    counts = {size: ctx.pool(n) for size, n in VAE_POOL.items()}
    return {size: data.cached(ctx.work, f"scenes{size}-{n}", lambda s=size, n=n: data.scene_pool(s, n))
            for size, n in counts.items()}


class VaeComponent(Component):
    name = "vae"
    budget = Budget(steps=4000, lr=1e-3, warmup=100)

    def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        self.pools = scene_pools(ctx)
        self.vae = architectures.vae(ctx.seed)

    def modules(self):
        return {"vae": self.vae}

    def loss(self, step: int) -> torch.Tensor:
        size, batch = (64, self.ctx.batch(4)) if step % 4 == 3 else (32, self.ctx.batch(16))
        pool = self.pools[size]
        x = data.to_unit(pool.images[data.batch_indices(len(pool.captions), batch, self.ctx.seed, 11, step)])
        posterior = self.vae.encode(x).latent_dist
        gen = data.step_generator(self.ctx.seed, 12, step)
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = self.vae.decode(z).sample
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
        return F.l1_loss(recon, x) + F.mse_loss(recon, x) + KL_WEIGHT * kl

    def export(self, ctx: Context, modules) -> None:
        vae = modules["vae"]
        sample = self.pools[32].images[:2048]  # the first 2048 training scenes
        z = data.encode(vae, sample).double()
        vae.register_to_config(scaling_factor=float(f"{1.0 / z.std().item():.4g}"),
                               shift_factor=float(f"{z.mean().item():.4g}"))
        vae.to(torch.float16).save_pretrained(ctx.out / build.VAE)


class _MeanPool(nn.Module):
    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


class TextComponent(Component):
    """CLIP-L, CLIP-G and T5 trained together on slot classification (one step trains all three)."""

    name = "text"
    budget = Budget(steps=800, lr=1e-3, warmup=50)

    def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        self.clip_tok = text.clip_tokenizer()
        self.t5_tok = text.t5_tokenizer()
        bos, eos = self.clip_tok.bos_token_id, self.clip_tok.eos_token_id
        self.clip_l = architectures.clip_text(len(self.clip_tok), bos, eos, seed=ctx.seed + 1, layers=4)
        self.clip_g = architectures.clip_text(len(self.clip_tok), bos, eos, seed=ctx.seed + 2, layers=5)
        self.t5 = architectures.t5_encoder(len(self.t5_tok), seed=ctx.seed + 3)
        torch.manual_seed(ctx.seed + 4)
        sizes = text.slot_sizes()
        self.heads = nn.ModuleDict({
            "l": nn.Linear(architectures.CLIP_WIDTH, sum(sizes)),
            "g": nn.Linear(architectures.CLIP_WIDTH, sum(sizes)),
            "t5": nn.Linear(architectures.T5_WIDTH, sum(sizes)),
        })
        self.pool = _MeanPool()

    def modules(self):
        return {"clip_l": self.clip_l, "clip_g": self.clip_g, "t5": self.t5, "heads": self.heads}

    @staticmethod
    def slot_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses, start = [], 0
        for i, n in enumerate(text.slot_sizes()):
            losses.append(F.cross_entropy(logits[:, start:start + n], targets[:, i]))
            start += n
        return torch.stack(losses).sum()

    def loss(self, step: int) -> torch.Tensor:
        texts, targets = text.text_batch(self.ctx.seed + 31, step, self.ctx.batch(64))
        ids = self.clip_tok(texts, padding="max_length", max_length=text.CLIP_MAX_LENGTH, truncation=True,
                            return_tensors="pt").input_ids
        total = 0.0
        for key, model in (("l", self.clip_l), ("g", self.clip_g)):
            out = model(ids)
            total = total + self.slot_loss(self.heads[key](out.text_embeds), targets)
        t5_in = self.t5_tok(texts, padding="max_length", max_length=text.T5_MAX_LENGTH, truncation=True,
                            return_tensors="pt")
        hidden = self.t5(t5_in.input_ids, attention_mask=t5_in.attention_mask).last_hidden_state
        total = total + self.slot_loss(self.heads["t5"](self.pool(hidden, t5_in.attention_mask)), targets)
        return total / 3

    def export(self, ctx: Context, modules) -> None:
        self.clip_tok.save_pretrained(ctx.out / build.TOKENIZER_CLIP)
        self.t5_tok.save_pretrained(ctx.out / build.TOKENIZER_T5)
        modules["clip_l"].to(torch.float16).save_pretrained(ctx.out / build.CLIP_L)
        modules["clip_g"].to(torch.float16).save_pretrained(ctx.out / build.CLIP_G)
        modules["t5"].to(torch.float16).save_pretrained(ctx.out / build.T5)
