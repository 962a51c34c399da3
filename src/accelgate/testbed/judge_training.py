"""Training of the judges: attribute classifier, contrastive CLIP, HPS-style and aesthetic-style.

The judges see the same rendered pools as the generators, plus light damage (blur, noise,
blockiness at low severity) on half the classifier's and CLIP's images, so they keep
naming attributes on slightly imperfect generated images rather than only on perfect
renders. Held-out combinations are never in the pools; the benchmark measures the judges on
freshly drawn scenes that include them.

- classifier: cross-entropy per attribute head (object heads on single-object scenes only).
- clip: symmetric InfoNCE, plus one hard negative caption per image (one attribute changed),
  so the score depends on every attribute, not only on what tells random scenes apart.
- hps: the CLIP fine-tuned so clean images outscore damaged ones of the same caption by a
  margin that grows with the damage, while keeping the contrastive loss.
- aesthetic: an AestheticHead regressing 7 - 5 x severity from the CLIP's image embeddings.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import torch
import torch.nn.functional as F

from accelgate.testbed import data, image_damage, judges, text, world
from accelgate.testbed.encoders import scene_pools
from accelgate.testbed.training import Budget, Component, Context

MILD = ("blur", "noise", "blocky")


def _mild(images: torch.Tensor, gen: torch.Generator, fraction: float = 0.5, top: float = 0.25) -> torch.Tensor:
    n = images.shape[0]
    hit = torch.rand(n, generator=gen) < fraction
    kinds = image_damage.random_kinds(n, gen, MILD)
    severity = torch.rand(n, generator=gen) * top * hit.float()
    return image_damage.damage(images, kinds, severity, gen)


class _JudgeData(Component):
    requires: tuple[str, ...] = ()
    seed_key = 0

    def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        self.pools = scene_pools(ctx)

    def batch(self, step: int, n: int):
        size = 64 if step % 4 == 3 else 32
        pool = self.pools[size]
        idx = data.batch_indices(len(pool.captions), self.ctx.batch(n), self.ctx.seed, self.seed_key, step)
        gen = data.step_generator(self.ctx.seed, self.seed_key, step)
        return size, pool, idx, gen


class ClassifierComponent(_JudgeData):
    name, seed_key = "classifier", 41
    budget = Budget(steps=2000, lr=2e-3, warmup=100, weight_decay=1e-4)

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        torch.manual_seed(ctx.seed + 41)
        self.model = judges.AttributeClassifier()

    def modules(self):
        return {"classifier": self.model}

    def loss(self, step: int) -> torch.Tensor:
        size, pool, idx, gen = self.batch(step, 64)
        images = _mild(pool.images[idx], gen).permute(0, 3, 1, 2)
        _, logits = self.model(images)
        attrs, single = pool.attributes[idx], pool.single[idx]
        total = F.cross_entropy(logits["count"], (~single).long())
        for col, key in enumerate(("shape", "colour", "position", "size", "background", "kind")):
            mask = single if key in ("shape", "colour", "position", "size") else torch.ones_like(single)
            total = total + F.cross_entropy(logits[key][mask], attrs[mask, col])
        return total

    def export(self, ctx: Context, modules) -> None:
        from safetensors.torch import save_file

        folder = ctx.out / judges.JUDGES
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in modules["classifier"].state_dict().items()},
                  folder / "classifier.safetensors")


def _features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipComponent(_JudgeData):
    name, seed_key = "clip", 42
    budget = Budget(steps=1200, lr=1e-3, warmup=100, weight_decay=0.05)

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        from transformers import CLIPModel

        self.tokenizer = text.clip_tokenizer()
        torch.manual_seed(ctx.seed + 42)
        self.model = CLIPModel(judges.clip_config())

    def modules(self):
        return {"clip": self.model}

    def texts(self, size: int, idx: torch.Tensor, gen: torch.Generator) -> tuple[list[str], list[str]]:
        pool = self.pools[size]
        rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen)))
        negatives = [world.perturbed(world.scene_at(data.POOL_SEEDS[size], int(i)), rng).caption() for i in idx]
        return [pool.captions[int(i)] for i in idx], negatives

    def encode(self, model, images: torch.Tensor, captions: list[str]):
        ids = self.tokenizer(captions, padding="max_length", max_length=text.CLIP_MAX_LENGTH, truncation=True,
                             return_tensors="pt")
        img = F.normalize(_features(model.get_image_features(pixel_values=judges.clip_pixels(images))), dim=-1)
        txt = F.normalize(_features(model.get_text_features(input_ids=ids.input_ids,
                                                            attention_mask=ids.attention_mask)), dim=-1)
        return img, txt

    def contrastive(self, model, img, txt, n: int) -> torch.Tensor:
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img @ txt.T  # [n, 2n]: own captions first, then hard negatives
        target = torch.arange(n)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :n].T, target)) / 2

    def loss(self, step: int) -> torch.Tensor:
        size, pool, idx, gen = self.batch(step, 64)
        images = _mild(pool.images[idx], gen).permute(0, 3, 1, 2)
        captions, negatives = self.texts(size, idx, gen)
        img, txt = self.encode(self.model, images, captions + negatives)
        return self.contrastive(self.model, img, txt, len(captions))

    def export(self, ctx: Context, modules) -> None:
        model = modules["clip"]
        folder = ctx.out / judges.JUDGES
        model.save_pretrained(folder / "clip")
        judges.clip_processor(self.tokenizer).save_pretrained(folder / "clip")
        oc = folder / "open_clip"
        oc.mkdir(parents=True, exist_ok=True)
        (oc / "config.json").write_text(json.dumps(judges.open_clip_config(model.config), indent=1) + "\n")
        text.write_open_clip_bpe(oc / "bpe_simple_vocab.txt.gz")
        torch.save({"state_dict": judges.hf_to_open_clip(model)}, oc / "clip.pt")


class HpsComponent(ClipComponent):
    name, seed_key = "hps", 43
    requires = ("clip",)
    budget = Budget(steps=600, lr=2e-4, warmup=50, weight_decay=0.05)

    def setup(self, ctx: Context) -> None:
        _JudgeData.setup(self, ctx)
        self.tokenizer = text.clip_tokenizer()
        base, _ = judges.clip_model_and_processor(ctx.out)
        self.model = copy.deepcopy(base).train()

    def loss(self, step: int) -> torch.Tensor:
        size, pool, idx, gen = self.batch(step, 48)
        clean = pool.images[idx]
        kinds = image_damage.random_kinds(len(idx), gen)
        severity = 0.1 + 0.9 * torch.rand(len(idx), generator=gen)
        damaged = image_damage.damage(clean, kinds, severity, gen)
        captions, negatives = self.texts(size, idx, gen)
        images = torch.cat([clean, damaged]).permute(0, 3, 1, 2)
        img, txt = self.encode(self.model, images, captions + negatives)
        n = len(captions)
        keep = self.contrastive(self.model, img[:n], txt, n)
        own = txt[:n]
        gap = (img[:n] * own).sum(-1) - (img[n:] * own).sum(-1)  # cosine(clean) - cosine(damaged)
        prefer = F.softplus(-(gap - 0.1 * severity) * 30).mean()
        return keep + prefer

    def export(self, ctx: Context, modules) -> None:
        path = ctx.out / judges.JUDGES / "open_clip" / "hps.pt"
        torch.save({"state_dict": judges.hf_to_open_clip(modules["clip"])}, path)


class AestheticComponent(_JudgeData):
    name, seed_key = "aesthetic", 44
    requires = ("clip",)
    budget = Budget(steps=1000, lr=1e-3, warmup=50)
    train_mode = False  # the head's Dropout layers stay off: steps are pure functions of their seed

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        from accelgate.metrics.aesthetic import AestheticHead

        self.clip, _ = judges.clip_model_and_processor(ctx.out)
        self.clip.requires_grad_(False)
        torch.manual_seed(ctx.seed + 44)
        self.head = AestheticHead(input_size=judges.CLIP_EMBED)

    def modules(self):
        return {"head": self.head}

    def loss(self, step: int) -> torch.Tensor:
        size, pool, idx, gen = self.batch(step, 128)
        kinds = image_damage.random_kinds(len(idx), gen)
        severity = torch.rand(len(idx), generator=gen) * (torch.rand(len(idx), generator=gen) < 0.7).float()
        images = image_damage.damage(pool.images[idx], kinds, severity, gen).permute(0, 3, 1, 2)
        with torch.no_grad():
            emb = F.normalize(_features(self.clip.get_image_features(pixel_values=judges.clip_pixels(images))), dim=-1)
        return F.mse_loss(self.head(emb).squeeze(-1), 7.0 - 5.0 * severity)

    def export(self, ctx: Context, modules) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in modules["head"].state_dict().items()},
                  ctx.out / judges.JUDGES / "aesthetic.safetensors")


JUDGES = (ClassifierComponent, ClipComponent, HpsComponent, AestheticComponent)
