"""The silent-no-op check for caches (issue 10, item 5): the fraction of the denoiser's work a
cache backend skipped, counted from its leaf-module calls, and a failure when it skipped none."""
from pathlib import Path

import pytest
import torch

from accelgate.backends.registry import BACKENDS
from accelgate.config.load import build_config
from accelgate.config.schema import ConfigError
from accelgate.quality.run import QualityRun
from accelgate.session import Session
from accelgate.skipped_work import SkippedWork, WorkCounter, skipped_work_check

REPO_BASELINES = Path(__file__).resolve().parents[2] / "baselines"


class Toy(torch.nn.Module):
    """Two linear layers; the second is skipped when `skip` is set: a one-block cache."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
        self.skip = False

    def forward(self, x):
        x = self.first(x)
        return x if self.skip else self.second(x)


def test_the_counter_sees_skipped_calls_and_leaves_no_hook_behind():
    toy, x = Toy(), torch.zeros(1, 2)
    with WorkCounter(toy) as counter:
        toy(x)  # full: 3 leaf calls
        toy.skip = True
        toy(x), toy(x)  # 1 each
    work = counter.result()
    assert work == SkippedWork(denoiser_calls=3, leaf_calls=5, busiest_call=3)
    assert work.fraction == pytest.approx(1 - 5 / 9)
    assert skipped_work_check(work).passed
    assert not any(m._forward_pre_hooks for m in toy.modules())


def test_a_cache_that_never_fires_fails_and_the_check_is_tight():
    toy = Toy()
    with WorkCounter(toy) as counter:
        for _ in range(4):
            toy(torch.zeros(1, 2))
    check = skipped_work_check(counter.result())
    assert counter.result().fraction == 0 and not check.passed
    assert check.threshold == pytest.approx(1 / 12)  # one skipped call of 4 x 3 passes
    assert "12 of 4 x 3 module calls" in check.note


def test_the_caches_declare_it_and_the_rest_do_not():
    assert {n for n, spec in BACKENDS.items() if spec.skips_work} == {
        "deepcache", "first-block-cache", "pyramid-attention-broadcast", "taylorseer"}


def _dit_run(tmp_path, backend_table):
    raw = {"models": ["tiny-dit"], "model": {"tiny-dit": {"resolutions": ["32x32"]}},
           "backends": ["eager", "first-block-cache"], "backend": {"first-block-cache": backend_table}}
    session = Session(build_config(raw, None, tmp_path), device="cpu")
    case = next(c for c in session.matrix.cases if c.backend.name == "first-block-cache")
    return QualityRun(session, REPO_BASELINES).evaluate(case)


def _skipped(verdict):
    return next(c for c in verdict.checks if c.metric == "skipped_work")


def test_a_cache_configured_never_to_skip_fails_as_a_silent_no_op(tmp_path):
    fires = _dit_run(tmp_path, {})
    assert _skipped(fires).passed, fires.message
    never = _dit_run(tmp_path, {"options": {"threshold": 0.0}})
    assert never.outcome == "failed" and _skipped(never).value == 0
    assert "silent no-op: first-block-cache is a cache but skipped none of the denoiser's work" in never.reason
    assert "skips_work = false in [backend.first-block-cache]" in never.reason
    switched_off = _dit_run(tmp_path, {"options": {"threshold": 0.0}, "skips_work": False})
    assert all(c.metric != "skipped_work" for c in switched_off.checks)


def test_skips_work_must_be_a_boolean(tmp_path):
    with pytest.raises(ConfigError, match="skips_work"):
        build_config({"backends": ["eager", "tomesd"], "backend": {"tomesd": {"skips_work": "yes"}}}, None, tmp_path)
