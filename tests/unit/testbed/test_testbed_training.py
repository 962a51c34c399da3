"""Every trainer runs, lowers its loss and exports, in a few seconds (tiny pools and batches).

Nothing trains for real here: `overfit` repeats one step's batch a few times, which must
lower the loss of a correct objective, and then writes the component the way the real run
does, so the next component (denoisers need the VAE and text encoders, pix2pix the SD UNet,
the preference judges the CLIP) loads it through the same code.
"""
from __future__ import annotations

import pytest
import torch

from accelgate.testbed import build, training
from accelgate.testbed.train import COMPONENTS


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("testbed-train")
    return training.Context(out=root / "weights", work=root / "work", seed=0, small=True)


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_a_few_steps_lower_the_loss(ctx, name):
    losses = training.overfit(COMPONENTS[name](), ctx, steps=4)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], f"{name}: loss did not fall over 4 steps on one batch: {losses}"


def test_budgets_are_steps_and_scale(ctx):
    budget = COMPONENTS["sd"].budget
    assert budget.scaled(0.5).steps == budget.steps // 2
    assert training.learning_rate(budget, 0) < training.learning_rate(budget, budget.warmup)


def test_exports_build_every_family(ctx):
    """After the overfit runs above, the exported components assemble into every pipeline."""
    for family in build.FAMILIES:
        pipe = build.build(family, ctx.out, resolution=32)
        assert pipe.vae.config.scaling_factor > 0
