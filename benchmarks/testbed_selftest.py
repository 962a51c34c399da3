"""The sensitivity self-test on the trained test bed: which shipped damages the gate catches on
pipelines that learned something, next to benchmarks/selftest.md (the random-weight tiny models).

    PYTHONPATH=src python benchmarks/testbed_selftest.py --weights DIR   # trained weights (MANIFEST.json)

Each trained family is assembled (`accelgate.testbed.build`), saved as a diffusers directory and
declared as a user's own model (`path`, its prompts inline: held-out world captions, DiT
classes, edit instructions with their source scenes), exactly as a user would gate a model of
their own. Then: `pytest -m quality --regen-baselines`, `pytest -m quality --accelgate-selftest`,
and benchmarks/selftest-testbed.md rendered from that run's results.json (nothing typed in).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

FAMILIES = ("tiny-sd", "tiny-sdxl", "tiny-sd-img2img", "tiny-pix2pix", "tiny-pixart", "tiny-dit")
DENOISER = {"tiny-pixart": "transformer", "tiny-dit": "transformer"}


def prompts_for(family: str, task: str, out: Path, count: int) -> list:
    """The family's prompts from the world's held-out evaluation items (input images written to `out`)."""
    from PIL import Image

    from accelgate.testbed import world

    items = world.evaluation_items(count)
    if task == "class-conditional":
        return [str(item.class_label) for item in items]
    if task == "text-to-image":
        return [item.caption for item in items]
    prompts = []
    for index, item in enumerate(items):
        source = item.edit.source if task == "edit" else item.scene
        path = out / f"{family}-{index}.png"
        Image.fromarray(world.render(source, 32)).save(path)
        prompts.append({"prompt": item.edit.instruction if task == "edit" else item.caption, "image": path.name})
    return prompts


def toml_value(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def write_project(weights: Path, out: Path, count: int) -> Path:
    from accelgate.testbed import build

    lines = ['reference = "eager"', f'baseline_dir = "{out / "baselines"}"',
             f"models = {toml_value(['tb-' + f.removeprefix('tiny-') for f in FAMILIES])}", 'backends = ["eager"]']
    for family in FAMILIES:
        spec = build.FAMILIES[family]
        target = out / "models" / family
        build.build(family, weights, resolution=32).save_pretrained(target)
        table = {"path": str(target), "pipeline_class": spec.pipeline, "task": spec.task,
                 "denoiser": DENOISER.get(family, "unet"), "resolutions": ["32x32"], "steps": spec.steps,
                 "guidance_scale": spec.guidance_scale, "prompts": prompts_for(family, spec.task, out, count)}
        if spec.call_kwargs:
            table["call_kwargs"] = dict(spec.call_kwargs)
        lines.append(f"\n[model.tb-{family.removeprefix('tiny-')}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    config = out / "accelgate.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def main() -> int:
    from accelgate.testbed import build

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=build.WEIGHTS, help="trained test-bed weights (MANIFEST.json)")
    parser.add_argument("--out", type=Path, default=None, help="where models, baselines and the report go")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per model")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="accelgate-testbed-selftest-"))
    out.mkdir(parents=True, exist_ok=True)
    config = write_project(args.weights, out, args.prompts)
    pytest = [sys.executable, "-m", "pytest", "-m", "quality", "-p", "no:cacheprovider", "-q",
              f"--accelgate-config={config}"]
    regen = subprocess.run([*pytest, "--regen-baselines"], cwd=REPO)
    if regen.returncode != 0:
        print(f"regen failed ({regen.returncode}); see above")
        return regen.returncode
    run = subprocess.run([*pytest, "--accelgate-selftest", f"--quality-report={out / 'report'}"], cwd=REPO)
    print(f"self-test exit status {run.returncode} (1 while any damage is missed)")
    from selftest_table import render

    results = json.loads((out / "report" / "results.json").read_text(encoding="utf-8"))
    stored = sorted(p.name for p in args.weights.iterdir() if p.is_dir())
    text = render(results).replace(
        "# The sensitivity self-test on this repository's matrix",
        "# The sensitivity self-test on the trained test bed").replace(
        "of the default matrix that runs here", "of the trained test bed (issue 8), declared as a user's own models")
    text = text.replace("python benchmarks/selftest_table.py   # runs: pytest -m quality --accelgate-selftest "
                        "-p no:cacheprovider -q",
                        "PYTHONPATH=src python benchmarks/testbed_selftest.py --weights DIR")
    text += (f"\nWeights: `python -m accelgate.testbed.train` at its full step budgets (stored: "
             f"{', '.join(stored)}); {args.prompts} held-out world prompts per model, 32x32, each family's own "
             "steps and guidance.\n")
    target = REPO / "benchmarks" / "selftest-testbed.md"
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
