"""Offline resolution of every metric's weights: nothing here ever touches the network.

A quality gate that downloads a 2 GB checkpoint in the middle of a test run is flaky on a
connected machine and broken on an air-gapped one, so each weight is looked up, in order:

1. an explicit path from the config (a missing configured path is an error, never a silent
   fall-back: the user asked for that file);
2. `$ACCELGATE_WEIGHTS_DIR` (default `~/.cache/accelgate/weights`), by file name;
3. the Hugging Face hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`), via
   `huggingface_hub.try_to_load_from_cache`, which only reads the cache;
4. the torch hub cache (`$TORCH_HOME/hub/checkpoints`), where torchvision, torch-fidelity
   and pytorch-fid store what they download;
5. for HPS, hpsv2's own cache (`$HPS_ROOT`, default `~/.cache/hpsv2`).

A miss raises `MetricWeightsMissing` (the plugin turns it into a skip, or a failure under
`--strict-metrics`) whose message names the file, every place searched, the variable that
moves each place, and the command that fetches it on a connected machine. A file that is
found but unloadable or has the wrong keys raises `MetricWeightsCorrupt`, which is never a
skip: a broken file must be replaced, not ignored. `prefetch_script()` prints every fetch
command, for the docs and for `python -m accelgate.metrics.weights`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from accelgate.errors import CaseFailed, CaseUnavailable
from accelgate.hub import hub_cache_dir

ENV_WEIGHTS_DIR = "ACCELGATE_WEIGHTS_DIR"
ENV_ALLOW_PICKLE = "ACCELGATE_ALLOW_PICKLE"


@dataclass(frozen=True)
class WeightSpec:
    """Where one metric's weights come from, and how to fetch them while online."""

    key: str
    description: str
    filenames: tuple[str, ...] = ()  # accepted names, canonical first; empty for a model directory
    hf_repo: str | None = None
    hf_repo_type: str = "model"
    hf_subfolder: str = ""
    url: str | None = None  # a direct download for `prefetch_script`
    torch_hub: bool = False  # also look in $TORCH_HOME/hub/checkpoints
    hpsv2_cache: bool = False  # also look in $HPS_ROOT (hpsv2's own cache)
    model_dir_files: tuple[tuple[str, ...], ...] = ()  # for HF model dirs: one file of each group

    def prefetch(self) -> str:
        if self.model_dir_files:
            return f'hf download {self.hf_repo} --include "*.json" "*.txt" "model.safetensors"'
        name = self.filenames[0]
        if self.hf_repo:
            kind = f" --repo-type {self.hf_repo_type}" if self.hf_repo_type != "model" else ""
            sub = f"{self.hf_subfolder}/" if self.hf_subfolder else ""
            return f"hf download {self.hf_repo} {sub}{name}{kind}"
        if self.torch_hub and self.url:
            return f"python -c \"import torch; torch.hub.load_state_dict_from_url('{self.url}')\""
        return f'mkdir -p "${ENV_WEIGHTS_DIR}" && curl -L -o "${ENV_WEIGHTS_DIR}/{name}" "{self.url}"'


_CLIP_DIR = dict(model_dir_files=(("config.json",), ("preprocessor_config.json", "processor_config.json"),
                                  ("tokenizer.json", "vocab.json"), ("model.safetensors", "pytorch_model.bin")))

WEIGHTS: dict[str, WeightSpec] = {
    spec.key: spec
    for spec in (
        WeightSpec("clip", "CLIP model for CLIP score / directional similarity (transformers format)",
                   hf_repo="openai/clip-vit-large-patch14", **_CLIP_DIR),
        WeightSpec("aesthetic", "LAION aesthetic predictor head (improved-aesthetic-predictor, ViT-L/14 MLP)",
                   filenames=("sac+logos+ava1-l14-linearMSE.pth",),
                   url="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
                       "sac+logos+ava1-l14-linearMSE.pth"),
        WeightSpec("hps-v2.0", "HPS v2.0 checkpoint (open_clip ViT-H-14, full state dict)",
                   filenames=("HPS_v2_compressed.pt",), hf_repo="xswu/HPSv2", hpsv2_cache=True),
        WeightSpec("hps-v2.1", "HPS v2.1 checkpoint (open_clip ViT-H-14, full state dict)",
                   filenames=("HPS_v2.1_compressed.pt",), hf_repo="xswu/HPSv2", hpsv2_cache=True),
        WeightSpec("inception", "FID/KID/IS Inception-v3 (TF 2015-12-05 weights, torch-fidelity layout)",
                   filenames=("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth"),
                   url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                       "weights-inception-2015-12-05-6726825d.pth", torch_hub=True),
        WeightSpec("lpips-alex", "LPIPS AlexNet backbone (torchvision ImageNet weights)",
                   filenames=("alexnet-owt-7be5be79.pth",),
                   url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", torch_hub=True),
        WeightSpec("lpips-vgg", "LPIPS VGG16 backbone (torchvision ImageNet weights)",
                   filenames=("vgg16-397923af.pth",),
                   url="https://download.pytorch.org/models/vgg16-397923af.pth", torch_hub=True),
        WeightSpec("lpips-squeeze", "LPIPS SqueezeNet 1.1 backbone (torchvision ImageNet weights)",
                   filenames=("squeezenet1_1-b8a52dc0.pth",),
                   url="https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth", torch_hub=True),
    )
}


class MetricWeightsMissing(CaseUnavailable):
    """A metric's weights are not on this machine. Reads as a skip reason."""

    def __init__(self, key: str, wanted: str, searched: Iterable[str], prefetch: str, note: str = ""):
        self.key, self.wanted, self.searched, self.prefetch = key, wanted, list(searched), prefetch
        lines = [f"{key}: weights not found offline: {wanted}"]
        if note:
            lines.append(note)
        lines.append("searched: " + "; ".join(self.searched))
        lines.append(f"put the file in ${ENV_WEIGHTS_DIR} ({weights_dir()}) or set its path in the config; "
                     f"to fetch it on a connected machine: {prefetch} (then copy the cache directory here)")
        super().__init__("\n".join(lines))

    @property
    def skip_reason(self) -> str:
        return str(self)


class MetricWeightsCorrupt(CaseFailed):
    """Weights were found but cannot be used: unreadable, or not the expected state dict."""


def weights_dir() -> Path:
    return Path(os.environ.get(ENV_WEIGHTS_DIR) or Path.home() / ".cache" / "accelgate" / "weights").expanduser()


def torch_hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def hpsv2_root() -> Path:
    return Path(os.environ.get("HPS_ROOT") or Path.home() / ".cache" / "hpsv2").expanduser()


def _hf_cached(repo: str, filename: str, repo_type: str) -> Path | None:
    """A file from the hub cache, or None; `try_to_load_from_cache` never opens a connection."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, repo_type=repo_type, cache_dir=hub_cache_dir())
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def spec(key: str) -> WeightSpec:
    try:
        return WEIGHTS[key]
    except KeyError:
        raise KeyError(f"unknown metric weights {key!r}; known: {', '.join(sorted(WEIGHTS))}") from None


def _first_file(folder: Path, names) -> Path | None:
    """The first of `names` that is a file in `folder`."""
    return next((folder / name for name in names if (folder / name).is_file()), None)


def resolve_file(key: str, explicit: str | os.PathLike | None = None) -> Path:
    """The local path of a single-file weight, or `MetricWeightsMissing` naming where to put it."""
    s = spec(key)
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        if path.is_dir() and _first_file(path, s.filenames):
            return _first_file(path, s.filenames)
        raise MetricWeightsMissing(key, f"configured path {path}", [f"{path} (does not exist or lacks "
                                   f"{' / '.join(s.filenames)})"], s.prefetch(),
                                   note="the config names this path, so no other place is searched")
    searched = []
    local = weights_dir()
    found = _first_file(local, s.filenames)
    if found:
        return found
    searched.append(f"{local} (${ENV_WEIGHTS_DIR})")
    if s.hf_repo:
        for name in s.filenames:
            rel = f"{s.hf_subfolder}/{name}" if s.hf_subfolder else name
            found = _hf_cached(s.hf_repo, rel, s.hf_repo_type)
            if found:
                return found
        searched.append(f"HF cache {hub_cache_dir()} repo {s.hf_repo} ($HF_HUB_CACHE / $HF_HOME)")
    caches = ((s.torch_hub, torch_hub_checkpoints, "torch hub cache {} ($TORCH_HOME)"),
              (s.hpsv2_cache, hpsv2_root, "hpsv2 cache {} ($HPS_ROOT)"))
    for wanted, folder, label in caches:
        if wanted:
            root = folder()
            found = _first_file(root, s.filenames)
            if found:
                return found
            searched.append(label.format(root))
    raise MetricWeightsMissing(key, " or ".join(s.filenames) + f" ({s.description})", searched, s.prefetch())


def resolve_model_dir(key: str = "clip", explicit: str | os.PathLike | None = None,
                      hf_repo: str | None = None) -> Path:
    """A transformers model directory (config + processor + weights) from a path or the hub cache.

    `explicit` may be a local directory or a hub repo id (then looked up in the cache only).
    """
    s = spec(key)
    repo = hf_repo or s.hf_repo
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_dir():
            _check_model_dir(key, path, s)
            return path
        if path.is_absolute() or str(explicit).startswith((".", "~")) or str(explicit).count("/") != 1:
            raise MetricWeightsMissing(key, f"configured model directory {path}", [f"{path} (not a directory)"],
                                       s.prefetch(), note="the config names this path, so no other place is searched")
        repo = str(explicit)
    config = _hf_cached(repo, "config.json", "model")
    if config is None:
        prefetch = s.prefetch().replace(s.hf_repo or "", repo)
        raise MetricWeightsMissing(key, f"{repo} ({s.description})",
                                   [f"HF cache {hub_cache_dir()} ($HF_HUB_CACHE / $HF_HOME)"], prefetch)
    _check_model_dir(key, config.parent, s, repo)
    return config.parent


def _check_model_dir(key: str, path: Path, s: WeightSpec, repo: str | None = None) -> None:
    missing = [" or ".join(group) for group in s.model_dir_files if not any((path / f).is_file() for f in group)]
    if missing:
        prefetch = s.prefetch().replace(s.hf_repo or "", repo or s.hf_repo or "")
        raise MetricWeightsMissing(key, f"{repo or path}: {', '.join(missing)}", [str(path)], prefetch,
                                   note=f"the model directory {path} is incomplete")


def load_checkpoint(path: str | os.PathLike, key: str, *, allow_pickle: bool | None = None):
    """`torch.load` on CPU with `weights_only=True`; errors become `MetricWeightsCorrupt`.

    Pickled code is refused unless `allow_pickle` (or $ACCELGATE_ALLOW_PICKLE=1): a checkpoint
    that needs it is re-saved as a plain state dict once, instead of executing it every run.
    """
    import pickle

    import torch

    if allow_pickle is None:
        allow_pickle = os.environ.get(ENV_ALLOW_PICKLE, "") == "1"
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as error:
        raise MetricWeightsCorrupt(
            f"{key}: {path} holds more than tensors and torch.load(weights_only=True) refused it "
            f"({str(error).splitlines()[0]}). If you trust the file, set {ENV_ALLOW_PICKLE}=1, or re-save "
            f"its state dict with torch.save(state_dict, path)."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as error:
        raise MetricWeightsCorrupt(
            f"{key}: {path} is not a readable torch checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}); a truncated download is the usual "
            f"cause: delete it and fetch it again with: {spec(key).prefetch() if key in WEIGHTS else 'its source'}"
        ) from None


def load_state_dict_strict(module, state_dict: Mapping, key: str, path: str | os.PathLike) -> None:
    """`module.load_state_dict(strict=True)`, with a mismatch reported as the keys that differ."""
    if not isinstance(state_dict, Mapping):
        raise MetricWeightsCorrupt(f"{key}: {path} holds a {type(state_dict).__name__}, not a state dict")
    expected, got = set(module.state_dict()), set(state_dict)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing or unexpected:
        raise MetricWeightsCorrupt(
            f"{key}: {path} does not match the model: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}; is it the right file ({spec(key).description})?"
        )
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:  # same keys, wrong shapes
        raise MetricWeightsCorrupt(f"{key}: {path} has the right keys but wrong shapes: "
                                   f"{str(error).splitlines()[-1].strip()}") from None


def status(explicit: Mapping[str, str] | None = None) -> dict[str, str]:
    """For each known weight: its resolved path, or the one-line reason it is missing."""
    explicit = explicit or {}
    out = {}
    for key, s in WEIGHTS.items():
        try:
            if s.model_dir_files:
                out[key] = str(resolve_model_dir(key, explicit.get(key)))
            else:
                out[key] = str(resolve_file(key, explicit.get(key)))
        except MetricWeightsMissing as error:
            out[key] = "MISSING: " + str(error).splitlines()[0]
    return out


def prefetch_script() -> str:
    """Shell commands that fetch every metric weight on a connected machine."""
    lines = ["# run on a machine with network access, then copy ~/.cache/huggingface/hub,",
             f"# $TORCH_HOME/hub/checkpoints (~/.cache/torch) and ${ENV_WEIGHTS_DIR} to the offline machine",
             f'export {ENV_WEIGHTS_DIR}="${{{ENV_WEIGHTS_DIR}:-$HOME/.cache/accelgate/weights}}"']
    for s in WEIGHTS.values():
        lines.append(f"# {s.key}: {s.description}")
        lines.append(s.prefetch())
    return "\n".join(lines)


if __name__ == "__main__":
    print(prefetch_script())
    print()
    for name, where in status().items():
        print(f"{name:14s} {where}")
