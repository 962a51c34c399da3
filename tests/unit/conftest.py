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
