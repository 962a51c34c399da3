"""Fixtures the library's unit tests share (one copy each, used with `pytest.mark.usefixtures`)."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def one_thread():
    """1 vs 2 threads moves outputs by a uint8 level (and a second thread only adds contention
    noise to timings): exact comparisons and speed tests pin the count, like the plugin on CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Every place a metric weight or a dataset is looked up, empty: nothing is found by accident."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("ACCELGATE_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HPS_ROOT", str(tmp_path / "hpsv2"))


@pytest.fixture
def example_backends(monkeypatch):
    """The repository's fixtures package (fixtures.example_backends, fixtures.speed_backends)
    importable by factory path, as a user's own backends would be."""
    monkeypatch.syspath_prepend(str(REPO))
    return REPO


QUALITY_TEST_MODULE = """
import pytest
pytestmark = [pytest.mark.quality]

def test_case(accelgate, accelgate_case):
    verdict = accelgate.verdict(accelgate_case)
    assert verdict.passed, verdict.message
"""


@pytest.fixture
def quality_module(pytester):
    """A pytester project's per-image test module (every task), as a user's repository has it."""
    pytester.makepyfile(test_quality=QUALITY_TEST_MODULE)


@pytest.fixture
def quality_project(pytester, quality_module):
    """`make(config_text, **modules)`: a pytester project with `accelgate.toml`, the given modules and
    the repository's fixtures importable by factory path, its reference baselines regenerated;
    returns the config's path."""

    def make(config_text: str, **modules: str) -> Path:
        pytester.syspathinsert(REPO)  # fixtures.example_backends
        pytester.syspathinsert(pytester.path)  # the project's own backend modules
        if modules:
            pytester.makepyfile(**modules)
        config = pytester.path / "accelgate.toml"
        config.write_text(config_text)
        regen = pytester.runpytest("-p", "no:cacheprovider", f"--accelgate-config={config}", "--regen-baselines")
        assert regen.parseoutcomes().get("passed"), regen.stdout.str()[-3000:]
        return config

    return make
