"""What the terminal shows (issue 11's acceptance): a backend that raises inside a helper keeps
its whole chained traceback (--tb=long shows the helper, --pdb stops in it); a failing case's
assertion message is a few lines plus the metric table, its verdict's repr one line; per-step
progress on a tty, none with CI=true or in a pipe."""
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

# pytester runs pytest in this process and afterwards drops every module a run imported;
# torch, triton's C extension (pulled in by dynamo) and torchao cannot be imported twice.
import torch._dynamo  # noqa: F401,E402
import torch._inductor.utils  # noqa: F401,E402
from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel  # noqa: F401,E402

REPO = Path(__file__).resolve().parents[3]
CONFIG = """
models = ["tiny-dit"]
backends = ["eager", "noise", "helper"]
baseline_dir = "baselines"
[model.tiny-dit]
steps = 3
resolutions = ["32x32"]
[backend.noise]
factory = "fixtures.example_backends:denoiser_noise"
options = {sigma = 0.1}
[backend.helper]
factory = "my_accel:make_fast"
"""
MY_ACCEL = """
def make_fast(pipe):
    return _fuse_attention(pipe)


def _fuse_attention(pipe):
    try:
        return pipe.transformer.fused_attention_processors
    except AttributeError as error:
        raise RuntimeError("could not fuse the attention of " + type(pipe).__name__) from error
"""
RAISE_LINE = MY_ACCEL.strip().splitlines().index(
    '        raise RuntimeError("could not fuse the attention of " + type(pipe).__name__) from error') + 1


@pytest.fixture
def project(quality_project):
    return quality_project(CONFIG, my_accel=MY_ACCEL)


def _error_block(lines: list[str], start: str) -> list[str]:
    """The `E   ` lines of the failure whose first E line contains `start`."""
    first = next(i for i, line in enumerate(lines) if line.startswith("E") and start in line)
    block = []
    for line in lines[first:]:
        if not line.startswith("E"):
            break
        block.append(line)
    return block


def test_a_raising_helper_shows_under_tb_long_and_a_failure_reads_as_a_report(pytester, project):
    result = pytester.runpytest("-p", "no:cacheprovider", f"--accelgate-config={project}", "--tb=long",
                                "--quality-report=out")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*def _fuse_attention(pipe):*",
        ">*return pipe.transformer.fused_attention_processors",
        "E*AttributeError: *fused_attention_processors*",
        "*The above exception was the direct cause of the following exception:*",
        "*def _fuse_attention(pipe):*",
        ">*raise RuntimeError(*",
        "E*RuntimeError: could not fuse the attention of DiTPipeline",
        f"E*accelgate: case tiny-dit/helper/32x32 ended in an error (RuntimeError at my_accel.py:{RAISE_LINE}: *)*",
        f"*my_accel.py:{RAISE_LINE}: RuntimeError",
    ])
    lines = result.stdout.lines
    message = _error_block(lines, "AssertionError: tiny-dit/noise/32x32: FAILED")
    table = [line for line in message if line.split()[1:2] in (["ok"], ["FAIL"])]
    # ssim, psnr, max_abs, color_shift, and state_leak (the noise's generator runs on from call to
    # call): value, threshold, direction each
    assert len(table) == 5
    rest = [line for line in message if line not in table]
    assert len(rest) <= 7, "\n".join(rest)  # title, worst image and its 3 paths, assert False, where ... repr
    where = next(line for line in rest if "where False = " in line)
    assert where.split("where False = ")[1].startswith("Verdict('tiny-dit/noise/32x32', failed: ") and len(where) < 300
    assert "    candidate out/images/tiny-dit/noise/32x32/" in "\n".join(rest)  # opens from the current directory
    result.stdout.fnmatch_lines(["*= accelgate =*", "FAILED (1):", "  tiny-dit/noise/32x32: quality dropped*",
                                 "    images (candidate, baseline, diff): out/images/tiny-dit/noise/32x32/0*",
                                 "ERROR (1):", f"  tiny-dit/helper/32x32: RuntimeError at my_accel.py:{RAISE_LINE}: *",
                                 "PASSED (1): tiny-dit/eager/32x32", "report: out/index.html*"])
    assert "step 3/3" not in result.stdout.str()  # not a terminal: no progress


def _python_path(*paths) -> str:
    """PYTHONPATH for a child pytest: the repository (fixtures.example_backends), the project (my_accel)."""
    return os.pathsep.join([*map(str, paths), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def test_pdb_stops_in_the_users_helper(pytester, project, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _python_path(REPO))
    result = pytester.run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--accelgate-config={project}",
                          "--pdb", "-k", "helper", stdin=b"p ('frame', type(pipe).__name__)\nc\n", timeout=600)
    text = result.stdout.str()
    assert f"my_accel.py({RAISE_LINE})_fuse_attention()" in text, text[-3000:]
    assert "('frame', 'DiTPipeline')" in text


def _in_a_terminal(pytester, config, **env) -> str:
    """pytest in a pseudo-terminal (a tty, as a person's shell gives it), its whole output."""
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    environ.update(TERM="xterm-256color", COLUMNS="120", PYTHONPATH=_python_path(REPO, pytester.path), **env)
    master, child = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--accelgate-config={config}",
                                "-k", "eager"], cwd=pytester.path, env=environ, stdin=child, stdout=child, stderr=child)
    os.close(child)
    output, deadline = b"", time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
        process.wait(timeout=60)
    return output.decode("utf-8", "replace")


def test_progress_per_step_on_a_terminal_and_none_with_ci_true(pytester, project):
    shown = _in_a_terminal(pytester, project)
    assert "1 passed" in shown, shown[-2000:]
    assert "\x1b7 tiny-dit/eager/32x32: image 1/2, step 1/3" in shown
    assert "tiny-dit/eager/32x32: image 2/2, step 3/3\x1b[K\x1b8" in shown
    quiet = _in_a_terminal(pytester, project, CI="true")
    assert "1 passed" in quiet, quiet[-2000:]
    assert "step 1/3" not in quiet and "\x1b7" not in quiet
