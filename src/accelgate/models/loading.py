"""Load a catalog model as a diffusers pipeline, through the real `from_pretrained` path.

Tiny models are built once per recipe and software versions, written with
`save_pretrained` into a cache directory (atomically: built beside, then renamed) and loaded
back with `from_pretrained`, so the loading code a real checkpoint goes through is the code
under test. Real models load strictly offline from the Hugging Face cache or a local path;
when they are absent, `check_available` says what to fetch and where it must go, without
loading anything.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from accelgate.errors import CaseUnavailable
from accelgate.hub import hub_cache_dir
from accelgate.models.registry import ModelSpec, build

DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


class ModelUnavailable(CaseUnavailable):
    """A model's weights are not on this machine; the message says how to provide them."""


def cache_root() -> Path:
    return Path(os.environ.get("ACCELGATE_CACHE", Path.home() / ".cache" / "accelgate")).expanduser()


def _tiny_dir(spec: ModelSpec, cache_dir: Path | None) -> Path:
    """One directory per recipe and software versions: an upgrade builds afresh (and the
    model hash then tells whether the weights really changed)."""
    import diffusers
    import torch

    from accelgate.models.tiny import RECIPE_VERSION

    key = f"{spec.id}-r{RECIPE_VERSION}-torch{torch.__version__}-diffusers{diffusers.__version__}"
    return Path(cache_dir or cache_root() / "tiny") / re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def ensure_tiny_built(spec: ModelSpec, cache_dir: Path | None = None) -> Path:
    target = _tiny_dir(spec, cache_dir)
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        import torch

        # The builders seed the global RNG (torch.manual_seed(0) per component); without a
        # fork, whether the caller's RNG was reset would depend on whether the cache was warm.
        with torch.random.fork_rng(devices=[]):
            pipe = build(spec)
        pipe.save_pretrained(staging, safe_serialization=True)
        try:
            staging.rename(target)
        except OSError:  # another process finished the same build first: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _how_to_fetch(spec: ModelSpec) -> str:
    if Path(spec.repo_id).is_absolute():  # declared with path only: there is no hub id to fetch
        return (f"write the pipeline there with pipe.save_pretrained(\"{spec.repo_id}\") (or copy a diffusers "
                f"pipeline directory there), or change path under [tool.accelgate.model.{spec.id}]")
    variant = f" (variant {spec.variant})" if spec.variant else ""
    return (f"on a connected machine run `huggingface-cli download {spec.repo_id}`{variant} with the same HF_HOME / "
            f"HF_HUB_CACHE as here (now {hub_cache_dir()}), or put a local copy somewhere and set "
            f"path = \"/path/to/{spec.repo_id.split('/')[-1]}\" under [tool.accelgate.model.{spec.id}]")


def gpu_only_reason(spec: ModelSpec, device: str, table: str) -> str:
    """The skip reason of a `gpu` model off CUDA: how to run it where it is, and what that costs,
    since a model declared with `path` used to skip here without saying that `gpu = false` exists."""
    dtype = (f" and dtype = \"float32\" (its {spec.dtype} is slow on CPU, and some of its kernels have no CPU "
             "version)") if spec.dtype != "float32" else ""
    return (f"{spec.id} is marked gpu and needs a CUDA device (running on {device}): run on a GPU machine with "
            f"--device cuda, or run it on this CPU with gpu = false{dtype} under {table}. That costs time and "
            f"memory: a full-size model takes minutes per image on CPU (fewer steps and a small resolution, e.g. "
            f"resolutions = [\"256x256\"], keep it short), and its CPU images need baselines of their own "
            f"(baselines/cpu/, written with --regen-baselines)")


_NOT_WEIGHTS = ("scheduler_config.json", "tokenizer_config.json", "preprocessor_config.json")


def _incomplete(root: Path) -> list[str]:
    """Components that `root/model_index.json` lists but whose folder or weights are absent
    (an interrupted download, or a copy made without the large files)."""
    try:
        index = json.loads((root / "model_index.json").read_text())
    except (OSError, ValueError) as error:
        return [f"model_index.json ({error})"]
    missing = []
    for name, entry in sorted(index.items()):
        if name.startswith("_") or not isinstance(entry, list) or entry[-1] is None:
            continue
        folder = root / name
        if not folder.is_dir():
            missing.append(f"{name}/")
            continue
        has_model_config = (folder / "config.json").exists() and not any((folder / c).exists() for c in _NOT_WEIGHTS)
        # exists() follows the cache's symlinks: a blob that never arrived counts as absent
        if has_model_config and not any(p.suffix in (".safetensors", ".bin") and p.exists() for p in folder.iterdir()):
            missing.append(f"{name}/ weights")
    return missing


def check_available(spec: ModelSpec, path: str | None = None) -> str | None:
    """Why `spec` cannot be loaded offline here (a skip reason), or None.

    Looks at files only (model_index.json, then each listed component's folder and weight
    files); loads nothing, downloads nothing.
    """
    if spec.source == "tiny":
        return None
    if path:
        root = Path(path).expanduser()
        if not (root / "model_index.json").is_file():
            return (f"{spec.id}: the configured path {path} has no model_index.json; point path at a diffusers "
                    f"pipeline directory (save_pretrained layout), or {_how_to_fetch(spec)}")
        where = f"the configured path {path}"
    else:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec.repo_id, "model_index.json", cache_dir=hub_cache_dir())
        if not isinstance(found, str):
            return f"{spec.id}: weights of {spec.repo_id} are not in the Hugging Face cache; {_how_to_fetch(spec)}"
        root = Path(found).parent
        where = f"the cached snapshot {root}"
    missing = _incomplete(root)
    if missing:
        return (f"{spec.id}: {where} is incomplete (missing {', '.join(missing)}), probably an interrupted "
                f"download; {_how_to_fetch(spec)}")
    return None


def load_pipeline(spec: ModelSpec, device: str, dtype: str | None = None, path: str | None = None,
                  cache_dir: Path | None = None):
    """A freshly loaded pipeline on `device`, progress bars off, scheduler as the spec says."""
    import diffusers
    import torch

    dtype_name = dtype or spec.dtype
    torch_dtype = getattr(torch, DTYPES[dtype_name])
    pipeline_class = getattr(diffusers, spec.pipeline_class, None)
    if pipeline_class is None:
        raise ModelUnavailable(f"{spec.id}: diffusers {diffusers.__version__} has no pipeline class "
                               f"{spec.pipeline_class!r}; upgrade diffusers")
    if spec.source == "tiny":
        pipe = pipeline_class.from_pretrained(ensure_tiny_built(spec, cache_dir), torch_dtype=torch_dtype,
                                              local_files_only=True)
    else:
        reason = check_available(spec, path)
        if reason:
            raise ModelUnavailable(reason)
        kwargs: dict[str, Any] = {"torch_dtype": torch_dtype, "local_files_only": True}
        if not path:
            kwargs["cache_dir"] = hub_cache_dir()
        if spec.variant:
            kwargs["variant"] = spec.variant
        if "safety_checker" in inspect.signature(pipeline_class.__init__).parameters:
            # its false positives are black images, which the degenerate-output guard would
            # blame on the backend under test
            kwargs["safety_checker"] = None
        source = str(Path(path).expanduser()) if path else spec.repo_id
        try:
            pipe = pipeline_class.from_pretrained(source, **kwargs)
        except OSError as error:  # a file the cheap check cannot foresee: a variant or a shard
            variant = f" with variant {spec.variant!r}" if spec.variant else ""
            raise ModelUnavailable(f"{spec.id}: loading {source}{variant} offline failed: {error}; "
                                   f"{_how_to_fetch(spec)}") from error
    if spec.scheduler:
        scheduler_class = getattr(diffusers, spec.scheduler, None)
        if scheduler_class is None:
            raise ValueError(f"{spec.id}: scheduler {spec.scheduler!r} is not a diffusers scheduler class")
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def model_hash(pipe) -> str:
    """sha256 over every component's weights (sorted keys, dtype, shape, bytes) and the
    scheduler config: equal exactly when two pipelines compute the same thing."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(pipe.components):
        component = pipe.components[name]
        if isinstance(component, torch.nn.Module):
            for key, tensor in sorted(component.state_dict().items()):
                data = tensor.detach().to("cpu").contiguous()
                digest.update(f"{name}.{key}:{data.dtype}:{tuple(data.shape)}".encode())
                digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif hasattr(component, "config") and name == "scheduler":
            config = {k: v for k, v in dict(component.config).items() if not k.startswith("_")}
            digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def vae_scale_factor(pipe) -> int:
    factor = getattr(pipe, "vae_scale_factor", None)
    return int(factor) if factor else 2 ** (len(pipe.vae.config.block_out_channels) - 1)


def prepare_resolution(pipe, spec: ModelSpec, height: int, width: int, *, applied: bool = False) -> None:
    """Check the model can make height x width, and set what it needs per resolution.

    DiT has no height/width call argument: its transformer is built for one sample size. On a
    fresh pipeline (`applied=False`) a transformer of another size is rebuilt at the case's
    size with the same weights, so its config and its modules agree (setting only the config
    left PatchEmbed's position-embedding base size at the old one, and a backend that rebuilt
    the transformer from its config, as save and reload does, changed the image). After a
    backend was applied (`applied=True`: the speed gate's shape switch) the backend's module is
    kept and only the config's sample size follows the case; DiT's PatchEmbed interpolates its
    position embedding for the new size at every call."""
    scale = vae_scale_factor(pipe)
    if spec.denoiser == "transformer":
        multiple = scale * int(pipe.transformer.config.patch_size or 1)
    else:
        multiple = scale * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    if height % multiple or width % multiple:
        raise ValueError(f"{spec.id} cannot make {width}x{height}: width and height must be multiples of "
                         f"{multiple} (VAE scale factor {scale} x the denoiser's downsampling)")
    if spec.task == "class-conditional":
        if height != width:
            raise ValueError(f"{spec.id} ({spec.pipeline_class}) makes square images only, not {width}x{height}")
        size = height // scale
        if pipe.transformer.config.sample_size != size:
            if applied:
                pipe.transformer.register_to_config(sample_size=size)
            else:
                pipe.transformer = transformer_at_sample_size(pipe.transformer, size)


def transformer_at_sample_size(transformer, size: int):
    """The same transformer built at latent sample size `size`: its config's class, its weights
    (the position embedding is a non-persistent buffer recomputed by the constructor), dtype,
    device and train/eval mode."""
    rebuilt = type(transformer).from_config({**transformer.config, "sample_size": size})
    rebuilt.load_state_dict(transformer.state_dict(), strict=True)
    parameter = next(transformer.parameters())
    return rebuilt.to(device=parameter.device, dtype=parameter.dtype).train(transformer.training)
