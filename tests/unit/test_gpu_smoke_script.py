"""scripts/gpu-smoke.sh (issue 12): on a machine without CUDA it stops before doing anything,
saying where to run it; its full run on CPU (`SMOKE_DEVICE=cpu`, see the script's header)
takes minutes and is run by hand, not in CI."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-smoke.sh"


def test_without_cuda_the_smoke_run_stops_and_says_where_to_run_it(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the script would run for minutes")
    fake_pytest = Path(sys.executable).with_name("pytest")  # the script finds python beside it
    env = {**os.environ, "PYTEST": str(fake_pytest), "SMOKE_DIR": str(tmp_path / "smoke")}
    run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "torch sees no CUDA device here; run it on a GPU machine" in run.stderr
    assert not (tmp_path / "smoke" / "baselines").exists()
