"""Image-to-image and instruction-edit cases (img2img, InstructPix2Pix) of the matrix, on real input photographs.

The matrix comes from the config ([tool.accelgate] in pyproject.toml); this module only asks
the library for each case's verdict and asserts it.
"""
import pytest

pytestmark = [pytest.mark.quality, pytest.mark.accelgate_tasks("image-to-image", "edit")]


def test_image_to_image(accelgate, accelgate_case):
    verdict = accelgate.verdict(accelgate_case)
    assert verdict.passed, verdict.message
