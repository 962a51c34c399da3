"""Multi-GPU quality runs (issue 12): under `pytest -n N --device cuda` each xdist worker takes
its own GPU, its GPU model decides its baselines, and N larger than the GPU count is refused.
No GPU here: torch's CUDA queries are replaced by a box with two GPUs of different models."""
import pytest
import torch

from accelgate.config.load import build_config
from accelgate.config.schema import ConfigError
from accelgate.machine import device_class
from accelgate.quality.run import QualityRun
from accelgate.session import Session, worker_device

GPUS = ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(GPUS))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: GPUS[torch.device(device).index or 0])


def test_each_worker_takes_its_own_gpu(two_gpus):
    assert [worker_device("cuda", (i, 2)) for i in range(2)] == ["cuda:0", "cuda:1"]
    assert worker_device("cuda", None) == "cuda" and worker_device("cuda:1", (0, 2)) == "cuda:1"
    assert worker_device("cpu", (1, 2)) == "cpu"


def test_more_workers_than_gpus_is_refused_with_the_count(two_gpus):
    with pytest.raises(ConfigError, match=r"pytest -n 3 with --device cuda: this machine has 2 GPU\(s\) .* "
                                          r"run with -n 2 \(or fewer\)"):
        worker_device("cuda", (2, 3))


def test_each_workers_gpu_model_decides_its_baselines(two_gpus, tmp_path):
    config = build_config({"models": ["tiny-sd"], "backends": ["eager"]}, None, tmp_path)
    sessions = [Session(config, "cuda", worker=(i, 2)) for i in range(2)]
    assert [s.device for s in sessions] == ["cuda:0", "cuda:1"]
    classes = [device_class(s.device) for s in sessions]
    assert classes == ["cuda-nvidia-h100-80gb-hbm3", "cuda-nvidia-a100-sxm4-40gb"]
    stores = [QualityRun(s, tmp_path / "baselines").store for s in sessions]
    assert [st.case_dir("tiny-sd", "64x64") for st in stores] == [
        tmp_path / "baselines" / c / "tiny-sd" / "64x64" for c in classes]


def test_the_controller_refuses_before_any_worker_starts(pytester, two_gpus):
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    (pytester.path / "accelgate.toml").write_text('models = ["tiny-sd"]\nbackends = ["eager"]\n')
    result = pytester.runpytest("-p", "no:cacheprovider", "--accelgate-config=accelgate.toml", "--device=cuda", "-n", "3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest -n 3 with --device cuda: this machine has 2 GPU(s)*run with -n 2*"])
