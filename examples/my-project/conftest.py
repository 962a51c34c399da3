"""Writes the project's model to models/my-sd before the matrix is collected, so that the
example needs no download: accelgate's tiny Stable Diffusion recipe (random weights, fixed
seed), saved with `save_pretrained` and then loaded by accelgate from `path` like any local
model. A real project points `path` at its own pipeline directory and needs no conftest."""
import shutil
import tempfile
from pathlib import Path

import pytest

MODEL_DIR = Path(__file__).resolve().parent / "models" / "my-sd"


def pytest_configure(config):
    if (MODEL_DIR / "model_index.json").is_file():
        return
    import torch

    from accelgate.models.tiny import build_tiny_sd

    try:
        with torch.random.fork_rng(devices=[]):  # the recipe seeds torch; leave the session's RNG alone
            pipe = build_tiny_sd()
    except ModuleNotFoundError as error:  # open_clip, for the tokenizer: a usage error, not an INTERNALERROR
        raise pytest.UsageError(f"my-project: cannot build models/my-sd: {error}") from None
    MODEL_DIR.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".my-sd.", dir=MODEL_DIR.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        staging.rename(MODEL_DIR)  # whole or not at all: a second process (xdist) keeps the first one's
    except OSError:
        if not (MODEL_DIR / "model_index.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
