"""The quality gate of this project: one test per (model, backend, resolution) of the
[tool.accelgate] matrix, parametrized by the accelgate plugin. No model or backend name here."""
import pytest

pytestmark = [pytest.mark.quality, pytest.mark.accelgate_tasks("text-to-image")]


def test_quality(accelgate, accelgate_case):
    verdict = accelgate.verdict(accelgate_case)
    assert verdict.passed, verdict.message
