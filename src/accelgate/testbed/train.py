"""`python -m accelgate.testbed.train`: train the test bed and write its weights + MANIFEST.json.

    python -m accelgate.testbed.train                       # everything, into the package's weights/
    python -m accelgate.testbed.train --components sd,dit   # some components (their inputs must exist)
    python -m accelgate.testbed.train --resume              # continue from the last checkpoints
    python -m accelgate.testbed.train --scale 0.1 --out /tmp/tb   # a quick run at 1/10 of the budgets

Components run in dependency order (VAE and text encoders before the denoisers; pix2pix
fine-tunes the SD UNet; the judges need only the tokenizer). Budgets are fixed in steps
(see each component's `budget`), never in wall time, so the same command gives the same
weights on any machine (with the same thread count: `--threads`, default 1). Caches and
checkpoints go to `--work` (default `.cache/accelgate-testbed`); with `--resume`, a finished
component is skipped and an interrupted one continues from its last checkpoint.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

from accelgate.testbed import build, training
from accelgate.testbed.diffusion import DENOISERS
from accelgate.testbed.encoders import TextComponent, VaeComponent
from accelgate.testbed.judge_training import JUDGES

COMPONENTS = {c.name: c for c in (VaeComponent, TextComponent, *DENOISERS, *JUDGES)}
MANIFEST = "MANIFEST.json"


def order(names: list[str]) -> list[str]:
    """`names` in the registry's order (which is a dependency order)."""
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown:
        raise SystemExit(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(COMPONENTS)}")
    return [n for n in COMPONENTS if n in names]


def versions() -> dict[str, str]:
    import diffusers
    import numpy
    import PIL
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
           "transformers": transformers.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__}
    try:
        import open_clip

        out["open_clip"] = open_clip.__version__
    except ImportError:
        pass
    return out


def file_hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(ctx: training.Context, argv: list[str], threads: int) -> Path:
    records = {name: training.load_record(ctx, name) for name in COMPONENTS}
    canonical = f"python -m accelgate.testbed.train --seed {ctx.seed} --threads {threads}"
    manifest = {
        "command": canonical + (f" --scale {ctx.scale:g}" if ctx.scale != 1 else ""),
        "last_invocation": "python -m accelgate.testbed.train " + " ".join(argv),
        "note": "components may be trained by several invocations (--components, --resume), also in parallel "
                "processes; each component's seconds are its own wall time on this machine",
        "seed": ctx.seed,
        "scale": ctx.scale,
        "threads": threads,
        "versions": versions(),
        "components": {name: rec for name, rec in records.items() if rec is not None},
        "train_seconds_total": round(sum(r["seconds"] for r in records.values() if r), 1),
        "files": file_hashes(ctx.out),
    }
    path = ctx.out / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m accelgate.testbed.train", description=__doc__.split("\n")[0])
    parser.add_argument("--components", default=",".join(COMPONENTS), help="comma-separated, default: all")
    parser.add_argument("--out", type=Path, default=build.WEIGHTS, help="where the weights go (default: package)")
    parser.add_argument("--work", type=Path, default=Path(".cache/accelgate-testbed"), help="caches, checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step budget (quick runs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (outputs depend on it; 1 is robust on shared cores)")
    parser.add_argument("--resume", action="store_true", help="skip finished components, continue checkpoints")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    ctx = training.Context(out=args.out, work=args.work / f"seed{args.seed}",
                           seed=args.seed, scale=args.scale)
    ctx.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for name in order([n.strip() for n in args.components.split(",") if n.strip()]):
        if args.resume and training.load_record(ctx, name) is not None:
            print(f"{name}: done earlier, skipped (--resume)", flush=True)
            continue
        component = COMPONENTS[name]()
        missing = [r for r in component.requires if training.load_record(ctx, r) is None]
        if missing:
            raise SystemExit(f"{name} needs {', '.join(missing)} trained first (in this --out/--work)")
        record = training.train(component, ctx, resume=args.resume, progress=not args.no_progress)
        training.save_record(ctx, name, record)
        print(f"{name}: {record['steps']} steps in {record['seconds']:.0f} s, final loss "
              f"{record['curve'][-1][1]:.4f}", flush=True)
    path = write_manifest(ctx, argv, args.threads)
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s this run)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
