"""Where the Hugging Face hub cache is, as the environment says *now*.

huggingface_hub reads HF_HUB_CACHE / HF_HOME once, at import: a conftest, a CI step or a
test that sets them later would otherwise be ignored. Every offline lookup (models, metric
weights, prompt datasets) passes this directory, so the place searched and the place named
in a "missing" message are the same.
"""
from __future__ import annotations

import os
from pathlib import Path


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)
