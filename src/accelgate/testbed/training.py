"""The training loop every component shares: seeded, resumable, budgeted in steps.

Why one loop: each component (VAE, text encoders, six denoisers, judges) differs only in
what it builds, what one step's loss is, and what it exports. Everything else, optimizer,
warmup + cosine learning rate, gradient clipping, EMA, checkpoints, the progress bar and
the learning curve, is the same and lives here.

Determinism: no module uses dropout and every random draw of a step (batch indices, noise,
timesteps, conditioning dropout) comes from generators keyed by (component seed, step), so
a run resumed from a checkpoint continues exactly like an uninterrupted one, and the same
command with the same thread count gives the same bytes.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm


@dataclass
class Context:
    """Where a training run reads and writes."""

    out: Path  # final weights (the package's weights/ by default)
    work: Path  # caches and checkpoints (never committed)
    seed: int = 0
    scale: float = 1.0  # multiplies every step budget (a quick run uses < 1)
    checkpoint_every: int = 250
    small: bool = False  # tiny pools and batches: for unit tests of the training code only

    def batch(self, n: int) -> int:
        return max(2, n // 16) if self.small else n

    def pool(self, n: int) -> int:
        return max(16, n // 256) if self.small else n


@dataclass
class Budget:
    steps: int
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.0
    ema: float | None = None  # EMA decay of the exported weights, None: export the raw weights
    clip: float = 1.0

    def scaled(self, scale: float) -> "Budget":
        out = copy.copy(self)
        out.steps = max(2, int(round(self.steps * scale)))
        out.warmup = min(self.warmup, max(1, out.steps // 10))
        return out


class Component:
    """One trainable part. Subclasses set `name`, `budget`, `requires`, and implement
    `setup`, `modules` (trained), `loss` and `export`."""

    name = ""
    budget = Budget(steps=1)
    requires: tuple[str, ...] = ()
    curve_every = 50
    train_mode = True  # False keeps modules in eval mode while training (no dropout draws)

    def setup(self, ctx: Context) -> None:  # build models, load what `requires` exported, make data
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def loss(self, step: int) -> torch.Tensor:
        raise NotImplementedError

    def export(self, ctx: Context, modules: dict[str, torch.nn.Module]) -> None:
        raise NotImplementedError


class Ema:
    """Exponential moving average of parameters, warmed up so early steps do not dominate."""

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float):
        self.decay = decay
        self.shadow = {name: copy.deepcopy(m).eval().requires_grad_(False) for name, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, torch.nn.Module], step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for name, module in modules.items():
            for avg, p in zip(self.shadow[name].parameters(), module.parameters()):
                avg.lerp_(p.detach(), 1 - decay)
            for avg, b in zip(self.shadow[name].buffers(), module.buffers()):
                avg.copy_(b)

    def state_dict(self) -> dict:
        return {name: m.state_dict() for name, m in self.shadow.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, m in self.shadow.items():
            m.load_state_dict(state[name])


def learning_rate(budget: Budget, step: int) -> float:
    if step < budget.warmup:
        return budget.lr * (step + 1) / budget.warmup
    progress = (step - budget.warmup) / max(1, budget.steps - budget.warmup)
    return budget.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train(component: Component, ctx: Context, resume: bool = True, progress: bool = True) -> dict:
    """Run (or resume) one component to its step budget and export it; returns its record."""
    budget = component.budget.scaled(ctx.scale)
    component.setup(ctx)
    modules = component.modules()
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    for m in modules.values():
        m.train(component.train_mode)
    opt = torch.optim.AdamW(params, lr=budget.lr, weight_decay=budget.weight_decay)
    ema = Ema(modules, budget.ema) if budget.ema else None
    ckpt = ctx.work / "checkpoints" / f"{component.name}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    start, curve, seconds = 0, [], 0.0
    if resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        if state["steps"] == budget.steps:
            for name, m in modules.items():
                m.load_state_dict(state["modules"][name])
            opt.load_state_dict(state["optimizer"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            start, curve, seconds = state["step"], state["curve"], state["seconds"]
    window: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(start, budget.steps), desc=component.name, initial=start, total=budget.steps,
               disable=not progress, mininterval=10, dynamic_ncols=True)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = learning_rate(budget, step)
        loss = component.loss(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{component.name}: loss became {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, budget.clip)
        opt.step()
        if ema is not None:
            ema.update(modules, step)
        window.append(float(loss.detach()))
        if len(window) == component.curve_every or step == budget.steps - 1:
            curve.append([step + 1, sum(window) / len(window)])
            bar.set_postfix(loss=f"{curve[-1][1]:.4f}")
            window = []
        done = step + 1
        if done % ctx.checkpoint_every == 0 or done == budget.steps:
            state = {"steps": budget.steps, "step": done, "curve": curve,
                     "seconds": seconds + time.perf_counter() - started,
                     "modules": {n: m.state_dict() for n, m in modules.items()},
                     "optimizer": opt.state_dict(), "ema": ema.state_dict() if ema else None}
            _save_atomic(state, ckpt)
    seconds += time.perf_counter() - started
    final = ema.shadow if ema is not None else modules
    for m in final.values():
        m.eval()
    component.export(ctx, final)
    return {"steps": budget.steps, "lr": budget.lr, "ema": budget.ema, "seconds": round(seconds, 1),
            "curve": [[s, round(v, 6)] for s, v in curve]}


def save_record(ctx: Context, name: str, record: dict) -> None:
    path = ctx.work / "records" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def load_record(ctx: Context, name: str) -> dict | None:
    path = ctx.work / "records" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class Frozen:
    """Earlier components' exports, loaded once per run for the components that need them."""

    ctx: Context
    cache: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, load):
        if key not in self.cache:
            self.cache[key] = load()
        return self.cache[key]


def overfit(component: Component, ctx: Context, steps: int = 4) -> list[float]:
    """Train on step 0's batch `steps` times and export; the losses must fall (unit tests:
    proves the objective, the gradients and the export of a component in a few seconds)."""
    component.setup(ctx)
    modules = component.modules()
    for m in modules.values():
        m.train(component.train_mode)
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.3 * component.budget.lr)  # small batches: a gentler rate
    losses = []
    for _ in range(steps):
        loss = component.loss(0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    for m in modules.values():
        m.eval()
    component.export(ctx, modules)
    return losses
