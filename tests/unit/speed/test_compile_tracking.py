"""The recompile counter and the compile-cache helper (accelgate.speed.compile_tracking).

Dynamo's counts do not depend on the compiler backend, so most tests compile with
backend="eager" (milliseconds); the one real inductor test is marked slow.
"""
from __future__ import annotations

import os

import pytest
import torch

from accelgate.speed.compile_tracking import (
    CompileCache, RecompileBudgetExceeded, RecompileCounter, reset_compiler_state,
)
from accelgate.speed.timing import MeasurementError, time_call


# ---------------------------------------------------------------- RecompileCounter


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _fn(x):
    return torch.sin(x) * 2 + 1


def test_two_shapes_without_dynamic_compile_twice(fresh_dynamo):
    compiled = torch.compile(_fn, dynamic=False, backend="eager")  # dynamo counts do not depend on the backend
    with RecompileCounter() as counter:
        compiled(torch.randn(4))
        compiled(torch.randn(8))
    assert (counter.compiles, counter.recompiles) == (2, 1)
    assert counter.compile_ids == ["0/0", "0/1"]
    counter.check_budget(1)
    with pytest.raises(RecompileBudgetExceeded, match=r"1 recompile\(s\), budget 0 .*0/1"):
        counter.check_budget(0, "compile @ 32x32, 64x64")


def test_one_shape_twice_compiles_once(fresh_dynamo):
    compiled = torch.compile(_fn, dynamic=False, backend="eager")
    with RecompileCounter() as counter:
        compiled(torch.randn(4))
        compiled(torch.randn(4))
    assert (counter.compiles, counter.recompiles) == (1, 0)
    counter.check_budget(0)


def test_recompile_limit_fallback_to_eager_fails_the_budget(fresh_dynamo):
    compiled = torch.compile(_fn, dynamic=False, backend="eager")
    with torch._dynamo.config.patch(recompile_limit=1), RecompileCounter() as counter:
        for n in (2, 3, 4):
            compiled(torch.randn(n))
    assert counter.compiles == 1 and counter.recompile_limit_hits == 1
    with pytest.raises(RecompileBudgetExceeded, match="recompile_limit and now run eager"):
        counter.check_budget(10)


def test_graph_breaks_are_counted(fresh_dynamo):
    def breaks(x):
        y = x.cos()
        torch._dynamo.graph_break()
        return y + 1

    with RecompileCounter() as counter:
        torch.compile(breaks, backend="eager")(torch.randn(3))
    assert counter.graph_breaks == 1 and counter.recompiles == 0 and counter.compiles == 2


def test_a_foreign_dynamo_reset_makes_the_count_incomplete(fresh_dynamo):
    with RecompileCounter() as counter:
        torch._dynamo.reset()
    assert counter.complete is False
    with pytest.raises(RecompileBudgetExceeded, match="could not be counted"):
        counter.check_budget(5)


def test_reset_compiler_state_keeps_active_counters(fresh_dynamo):
    with RecompileCounter() as counter:
        reset_compiler_state()
        compiled = torch.compile(_fn, dynamic=False, backend="eager")
        compiled(torch.randn(2))
        compiled(torch.randn(3))
    assert counter.complete and counter.recompiles == 1


# ---------------------------------------------------------------- CompileCache


def test_compile_cache_sets_and_restores_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    monkeypatch.delenv("NEXFORT_GRAPH_CACHE", raising=False)
    cache = CompileCache(tmp_path / "cache")
    with pytest.raises(MeasurementError, match="is empty: run the cold warmup"):
        cache.warm()
    with cache.cold():
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache")
        assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "cache" / "triton")
        assert os.environ["NEXFORT_GRAPH_CACHE"] == "1"
        (tmp_path / "cache" / "entry").write_text("compiled")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/else"
    assert "NEXFORT_GRAPH_CACHE" not in os.environ
    with cache.warm():
        assert (tmp_path / "cache" / "entry").exists()  # warm keeps what cold wrote
    with cache.cold():
        assert cache.files() == 0  # cold starts empty


@pytest.mark.slow
def test_inductor_cold_vs_warm_cache_and_recompiles(tmp_path, fresh_dynamo):
    """The real thing on a tiny function: inductor compiles in ~15 s cold, ~0.05 s warm here."""
    cache = CompileCache(tmp_path / "inductor")
    times = {}
    for mode in ("cold", "warm"):
        with getattr(cache, mode)(), RecompileCounter() as counter:
            compiled = torch.compile(_fn, dynamic=False)
            _, times[mode] = time_call(lambda: compiled(torch.randn(64)))
            compiled(torch.randn(32))
        assert (counter.compiles, counter.recompiles) == (2, 1), mode
    assert cache.files() > 0
    assert times["cold"] / times["warm"] > 3, times


def test_reuse_points_at_the_cache_without_dropping_compiled_code(tmp_path, fresh_dynamo):
    """The speed run's shape sweep: switching a compiled function to another shape inside
    `reuse()` must count as a recompile of the same frame (no reset renumbers it)."""
    cache = CompileCache(tmp_path / "cache")
    compiled = torch.compile(_fn, dynamic=False, backend="eager")
    with RecompileCounter() as counter:
        compiled(torch.randn(4))
        with cache.reuse():
            assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache")
            compiled(torch.randn(4))  # still compiled: no reset happened
            compiled(torch.randn(8))
    assert counter.compile_ids == ["0/0", "0/1"]
