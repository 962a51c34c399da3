"""Speed and memory cases: every case of the matrix (all tasks) through pytest-benchmark.

The matrix comes from the config ([tool.accelgate] in pyproject.toml); this module asks the
library for one measurement per case (cold and warm-cache warmup, it/s, E2E, peak memory,
recompiles, all in the benchmark's extra_info) and asserts its verdict: the recompile budget
and the min_speedup floor. Regressions against a saved run are pytest-benchmark's job:
`pytest -m benchmark --benchmark-compare --benchmark-compare-fail=median:10%`.
"""
import pytest

pytestmark = [pytest.mark.benchmark]


def test_speed(accelgate_speed, accelgate_case, benchmark):
    verdict = accelgate_speed.measure(accelgate_case, benchmark)
    assert verdict.passed, verdict.message
