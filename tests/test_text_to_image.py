"""Text-to-image cases: every text-to-image model of the matrix x every backend that serves it.

The matrix comes from the config ([tool.accelgate] in pyproject.toml); this module only asks
the library for each case's verdict and asserts it.
"""
import pytest

pytestmark = [pytest.mark.quality, pytest.mark.accelgate_tasks("text-to-image")]


def test_text_to_image(accelgate, accelgate_case):
    verdict = accelgate.verdict(accelgate_case)
    assert verdict.passed, verdict.message
