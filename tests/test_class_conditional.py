"""Class-conditional cases (DiT) of the matrix: class labels instead of prompts.

The matrix comes from the config ([tool.accelgate] in pyproject.toml); this module only asks
the library for each case's verdict and asserts it.
"""
import pytest

pytestmark = [pytest.mark.quality, pytest.mark.accelgate_tasks("class-conditional")]


def test_class_conditional(accelgate, accelgate_case):
    verdict = accelgate.verdict(accelgate_case)
    assert verdict.passed, verdict.message
