"""Measure the trained CPU test bed and write benchmarks/testbed.md (+ testbed.json).

    PYTHONPATH=src python benchmarks/testbed.py                 # everything (~30 min on 1 busy core)
    PYTHONPATH=src python benchmarks/testbed.py --sections judges,eager --prompts 16

Sections (each figure in the .md comes from this script's output, nothing is typed in):
  judges      the judges on held-out world images (classifier, CLIP, HPS-style, aesthetic-style)
  eager       eager images of every family: attribute / class accuracy, edit success, domain FID/KID
  condition   two prompts differing in shape and colour, same seed: SSIM
  floor       SSIM and mean move vs a relative perturbation of the denoiser output (all steps /
              last quarter), half the steps, harmless changes; final latent std
  backends    every built-in lossy backend: SSIM, judge accuracy, domain FID delta, skipped calls
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from accelgate.testbed import build, evaluate, image_damage, judges, measure, world

TEXT = ("tiny-sd", "tiny-sdxl", "tiny-pixart", "tiny-sd3")
ALL = ("tiny-sd", "tiny-sdxl", "tiny-sd-img2img", "tiny-pix2pix", "tiny-pixart", "tiny-dit", "tiny-sd3")
UNETS = ("tiny-sd", "tiny-sdxl", "tiny-sd-img2img", "tiny-pix2pix")
BACKENDS = ("bf16", "fp8-layerwise", "torchao-int8", "deepcache", "tomesd", "first-block-cache",
            "pyramid-attention-broadcast", "taylorseer")
CACHES = ("deepcache", "first-block-cache", "pyramid-attention-broadcast", "taylorseer")


def task(family: str) -> str:
    return build.FAMILIES[family].task


def judge_images(family, clf, images, items) -> dict:
    if task(family) == "text-to-image":
        return evaluate.text_accuracy(clf, images, items)
    if task(family) == "class-conditional":
        return evaluate.class_accuracy(clf, images, items)
    return evaluate.edit_success(clf, images, items)


# ------------------------------------------------------------------------------ sections
def section_judges(args, weights) -> dict:
    clf = judges.load_classifier(weights)
    out: dict = {"classifier": {}}
    scenes = [world.scene_at(4242, i, two_objects=False, train=False) for i in range(args.judge_images)]
    for res in (32, 64):
        images = world.render_batch(scenes, res)
        hits = judges.attribute_hits(clf, images, scenes)
        out["classifier"][res] = {k: evaluate.rate(v) for k, v in hits.items()}
    vae = build.load_vae(weights)  # the VAE round trip: an upper bound for generated images
    for res in (32, 64):
        images = world.render_batch(scenes[:256], res)
        with torch.no_grad():
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
            back = ((vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1) + 1) * 127.5).round()
        back = back.byte().permute(0, 2, 3, 1).numpy()
        hits = judges.attribute_hits(clf, back, scenes[:256])
        out.setdefault("vae_round_trip", {})[res] = {
            **{k: evaluate.rate(v) for k, v in hits.items()},
            "mean_abs_levels": float(np.abs(back.astype(float) - images).mean()),
            "ssim_mean": float(np.mean([measure.ssim(a, b) for a, b in zip(back, images)]))}
    n = min(256, args.judge_images)
    rng = np.random.default_rng(5)
    captions = [s.caption() for s in scenes[:n]]
    negatives = [world.perturbed(s, rng).caption() for s in scenes[:n]]
    images = world.render_batch(scenes[:n], 64)
    clip = judges.clip_features(weights)
    hps = judges.hps_scorer(weights)
    aes = judges.aesthetic_scorer(weights)
    own, other = clip.clip_score(list(images), captions, clamp=False), clip.clip_score(list(images), negatives, clamp=False)
    h_own, h_other = hps.score(list(images), captions), hps.score(list(images), negatives)
    out["clip_prefers_own_caption"] = evaluate.rate((own > other).tolist())
    out["hps_prefers_own_caption"] = evaluate.rate((h_own > h_other).tolist())
    clean = torch.from_numpy(images)
    prefs = {}
    for kind in image_damage.KINDS:
        gen = torch.Generator().manual_seed(11)
        hurt = image_damage.damage(clean, [kind] * n, torch.full((n,), 0.5), gen).numpy()
        prefs[kind] = {
            "clip_score": evaluate.rate((own > clip.clip_score(list(hurt), captions, clamp=False)).tolist()),
            "hps": evaluate.rate((h_own > hps.score(list(hurt), captions)).tolist()),
            "aesthetic": evaluate.rate((aes.score(list(images)) > aes.score(list(hurt))).tolist()),
        }
    out["prefers_clean_at_severity_0.5"] = prefs
    out["aesthetic_clean_mean"] = float(aes.score(list(images)).mean())
    return out


def section_eager(args, weights, items) -> dict:
    clf = judges.load_classifier(weights)
    extractor = judges.feature_extractor(weights)
    out = {}
    for family in args.families:
        for res in (32, 64):
            pipe = build.build(family, weights, resolution=res)
            started = time.perf_counter()
            images = evaluate.generate(pipe, family, items, res)
            seconds = (time.perf_counter() - started) / len(items)
            kind = "edit" if task(family) in ("edit", "image-to-image") else "text"
            reference = evaluate.world_images(items, res, kind)
            floor = evaluate.world_reference(len(items), res)
            feats = evaluate.features(extractor, images)
            row = {"seconds_per_image": round(seconds, 3), "judge": judge_images(family, clf, images, items),
                   "domain": evaluate.fid_kid(feats, evaluate.features(extractor, reference)),
                   "world_vs_world": evaluate.fid_kid(evaluate.features(extractor, floor),
                                                      evaluate.features(extractor, reference))}
            out[f"{family}@{res}"] = row
            print(family, res, json.dumps(row), flush=True)
    return out


def section_condition(args, weights) -> dict:
    """Large objects in the centre on grey; `world_ssim` is the same pair rendered by the world
    (what a perfect model would score: SSIM of two clean 64 px renders is itself 0.26-0.80)."""
    pairs = [(("red", "circle"), ("blue", "square")), (("green", "ring"), ("pink", "triangle")),
             (("yellow", "cross"), ("purple", "diamond")), (("cyan", "square"), ("orange", "triangle"))]
    out = {}
    for family in [f for f in args.families if f in TEXT + ("tiny-dit",)]:
        for res in (32, 64):
            pipe = build.build(family, weights, resolution=res)
            values, worlds = [], []
            for k, (a, b) in enumerate(pairs):
                made, scenes = [], []
                for colour, shape in (a, b):
                    scene = world.Scene((world.Obj(shape, colour, "center", "large"),), "grey", "plain")
                    item = world.EvalItem(scene.caption(), scene.class_label(), scene, None)
                    made.append(evaluate.generate(pipe, family, [item], res, seed=100 + k)[0])
                    scenes.append(scene)
                values.append(measure.ssim(*evaluate.uint8(np.stack(made))))
                worlds.append(measure.ssim(*(world.render(sc, res) for sc in scenes)))
            out[f"{family}@{res}"] = {"ssim_max": max(values), "ssim": values, "world_ssim": worlds}
            print(family, res, out[f"{family}@{res}"], flush=True)
    return out


def section_floor(args, weights, items) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = {}
    items = items[: args.floor_prompts]
    for family in args.families:
        res = 32
        pipe = build.build(family, weights, resolution=res)
        with measure.counting_calls(pipe) as count, evaluate.captured_latents(pipe) as latents:
            ref = evaluate.generate(pipe, family, items, res)
        calls = count.denoiser_calls // len(items)
        row: dict = {"denoiser_calls": calls,
                     "final_latent_std": float(np.mean([z.flatten(1).std(dim=1).mean() for z in latents])),
                     "world_latent_std": evaluate.world_latent_std(pipe, family, res)}
        with sdpa_kernel([SDPBackend.MATH]):
            row["harmless_sdpa_math"] = measure.move(ref, evaluate.generate(pipe, family, items, res))
        cl = build.build(family, weights, resolution=res)
        measure.denoiser(cl).to(memory_format=torch.channels_last)
        cl.vae.to(memory_format=torch.channels_last)
        row["harmless_channels_last"] = measure.move(ref, evaluate.generate(cl, family, items, res))
        half = build.FAMILIES[family].steps // 2
        row["half_steps"] = measure.move(ref, evaluate.generate(pipe, family, items, res, steps=half))
        late = set(range(int(0.75 * calls), calls))
        for rel in (1e-4, 1e-3, 1e-2, 1e-1):
            for where, steps in (("all", None), ("late", late)):
                images = []
                for i, item in enumerate(items):
                    with measure.perturbed_output(pipe, rel, steps, seed=i):
                        images.append(evaluate.generate(pipe, family, [item], res, seed=i)[0])
                row[f"perturb_{where}_{rel:g}"] = measure.move(ref, np.stack(images))
        harmless = max(row["harmless_sdpa_math"]["mean_abs"], row["harmless_channels_last"]["mean_abs"], 1e-12)
        row["ratio_half_steps"] = row["half_steps"]["mean_abs"] / harmless
        row["ratio_late_1e-2"] = row["perturb_late_0.01"]["mean_abs"] / harmless
        out[family] = row
        print(family, json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
    return out


def section_backends(args, weights, items) -> dict:
    from accelgate.backends.registry import get_backend

    clf = judges.load_classifier(weights)
    extractor = judges.feature_extractor(weights)
    items = items[: args.backend_prompts]
    res = 32
    out = {}
    for family in args.families:
        eager = build.build(family, weights, resolution=res)
        with measure.counting_calls(eager) as count:
            ref = evaluate.generate(eager, family, items, res)
        kind = "edit" if task(family) in ("edit", "image-to-image") else "text"
        world_feats = evaluate.features(extractor, evaluate.world_images(items, res, kind))
        ref_fid = evaluate.fid_kid(evaluate.features(extractor, ref), world_feats)["fid"]
        rows = {"eager": {"judge": judge_images(family, clf, ref, items), "fid": ref_fid}}
        for name in BACKENDS:
            if (name in ("deepcache", "tomesd") and family not in UNETS) or (
                    name == "first-block-cache" and family in UNETS):
                rows[name] = {"n/a": "does not serve this denoiser"}
                continue
            spec = get_backend(name)
            try:
                pipe = spec.apply_to(build.build(family, weights, resolution=res))
                with measure.counting_calls(pipe) as counted:
                    images = evaluate.generate(pipe, family, items, res, context=spec.call_context)
            except Exception as error:  # noqa: BLE001 - a backend that fails is a result too
                rows[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"}
                continue
            moved = measure.move(ref, images)
            skipped = 1 - counted.total / max(1, count.total)
            fid = evaluate.fid_kid(evaluate.features(extractor, images), world_feats)["fid"]
            rows[name] = {"ssim_min": moved["ssim_min"], "ssim_mean": float(np.mean(
                [measure.ssim(a, b) for a, b in zip(evaluate.uint8(ref), evaluate.uint8(images))])),
                "judge": judge_images(family, clf, images, items), "fid_delta": fid - ref_fid,
                "skipped": skipped, "silent_no_op": name in CACHES and skipped <= 0 and moved["max_abs_uint8"] <= 1}
            print(family, name, json.dumps(rows[name]), flush=True)
        out[family] = rows
    return out


# ------------------------------------------------------------------------------ report
def _f(value, digits: int = 3) -> str:
    if isinstance(value, str) or value is None:
        return str(value)
    if value != value:
        return "nan"
    return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2e}"


def _pct(value) -> str:
    return "nan" if value != value else f"{100 * value:.1f}%"


def _ok(passed: bool) -> str:
    return "met" if passed else "**not met**"


def _training(lines: list[str], weights: Path) -> None:
    path = weights / "MANIFEST.json"
    if not path.is_file():
        return
    manifest = json.loads(path.read_text())
    lines += ["## Training (from weights/MANIFEST.json)", "", f"`{manifest['command']}`, threads "
              f"{manifest['threads']}, seed {manifest['seed']}", "",
              "| component | steps | seconds | first loss | final loss |", "|---|---|---|---|---|"]
    for name, rec in manifest["components"].items():
        curve = rec["curve"]
        lines.append(f"| {name} | {rec['steps']} | {rec['seconds']:.0f} | {_f(curve[0][1], 4)} | {_f(curve[-1][1], 4)} |")
    lines += ["", f"Total training compute: {manifest['train_seconds_total'] / 60:.0f} min.", ""]


def write_report(results: dict, path: Path, weights: Path = build.WEIGHTS) -> None:
    lines = ["# Test bed measurements", "", "Generated by `benchmarks/testbed.py`; every figure below is its output.",
             "", "Commands:", ""]
    lines += [f"    {c}" for c in [results["command"], *results.get("commands", [])]]
    lines += ["", f"Threads: {results['threads']}; section seconds: {results.get('seconds', {})}", ""]
    _training(lines, weights)
    if "judges" in results:
        j = results["judges"]
        lines += ["## Judges on held-out world images (target >= 98% per attribute)", "",
                  "| resolution | " + " | ".join(judges.ATTRIBUTE_NAMES) + " | target |",
                  "|---" * (len(judges.ATTRIBUTE_NAMES) + 2) + "|"]
        for res, acc in j["classifier"].items():
            worst = min(acc.values())
            lines.append(f"| {res} | " + " | ".join(_pct(acc[k]) for k in judges.ATTRIBUTE_NAMES)
                         + f" | {_ok(worst >= 0.98)} |")
        lines += ["", "The same judge on VAE round trips (encode, decode) of held-out world images: the ceiling "
                  "for generated images.", "", "| resolution | " + " | ".join(judges.ATTRIBUTE_NAMES)
                  + " | mean abs error (levels) | SSIM |", "|---" * (len(judges.ATTRIBUTE_NAMES) + 3) + "|"]
        for res, acc in j.get("vae_round_trip", {}).items():
            lines.append(f"| {res} | " + " | ".join(_pct(acc[k]) for k in judges.ATTRIBUTE_NAMES)
                         + f" | {_f(acc['mean_abs_levels'], 2)} | {_f(acc['ssim_mean'])} |")
        lines += ["", f"CLIP judge scores an image's own caption above a one-attribute-changed caption: "
                  f"{_pct(j['clip_prefers_own_caption'])}; HPS-style judge: {_pct(j['hps_prefers_own_caption'])}.",
                  "", "Fraction of images scored higher clean than damaged (severity 0.5):", "",
                  "| damage | CLIP score | HPS-style | aesthetic-style |", "|---|---|---|---|"]
        for kind, row in j["prefers_clean_at_severity_0.5"].items():
            lines.append(f"| {kind} | {_pct(row['clip_score'])} | {_pct(row['hps'])} | {_pct(row['aesthetic'])} |")
        lines.append("")
    if "eager" in results:
        lines += ["## Eager images of every family", "",
                  "Text-to-image: judge accuracy for the image's own prompt (targets: colour >= 90%, shape >= 80%). "
                  "DiT: class (shape and colour) accuracy. img2img / pix2pix: edit success (instructed attribute "
                  "changed, the others kept). Domain FID/KID: judge features of the family's images vs the world's "
                  "renderings of the same prompts; `world` is a second world set vs the same renderings (the floor).",
                  "", "| family | s/image | accuracy | target | FID | KID | world FID |", "|---|---|---|---|---|---|---|"]
        for key, row in results["eager"].items():
            fam = key.split("@")[0]
            acc = row["judge"]
            if task(fam) == "text-to-image":
                text = ", ".join(f"{k} {_pct(acc[k])}" for k in ("colour", "shape", "position", "size", "background"))
                target = _ok(acc["colour"] >= 0.9 and acc["shape"] >= 0.8)
            elif task(fam) == "class-conditional":
                text, target = f"class {_pct(acc['class'])} (shape {_pct(acc['shape'])}, colour {_pct(acc['colour'])})", "-"
            else:
                text = f"success {_pct(acc['success'])} (changed {_pct(acc['changed'])}, kept {_pct(acc['kept'])}; " + \
                    ", ".join(f"{k} {_pct(acc['success_' + k])}" for k in world.EDIT_KINDS) + ")"
                target = "-"
            lines.append(f"| {key} | {row['seconds_per_image']} | {text} | {target} | {_f(row['domain']['fid'])} | "
                         f"{_f(row['domain']['kid'], 4)} | {_f(row['world_vs_world']['fid'])} |")
        lines.append("")
    if "condition" in results:
        lines += ["## Conditioning: two prompts differing in shape and colour, same seed (target SSIM < 0.6)", "",
                  "Pairs: red circle / blue square, green ring / pink triangle, yellow cross / purple diamond, "
                  "cyan square / orange triangle; large, centred, grey background; DiT gets the two classes.", "",
                  "| family | SSIM per pair | max | target | world renders of the pairs |", "|---|---|---|---|---|"]
        for key, row in results["condition"].items():
            lines.append(f"| {key} | {', '.join(_f(v) for v in row['ssim'])} | {_f(row['ssim_max'])} | "
                         f"{_ok(row['ssim_max'] < 0.6)} | {', '.join(_f(v) for v in row['world_ssim'])} |")
        lines.append("")
    if "floor" in results:
        lines += ["## Noise floor at 32 px (mean move in float uint8 levels / worst-image SSIM vs eager)", "",
                  "Targets: half the steps and a 1e-2 perturbation of the last quarter move the images >= 10x the "
                  "larger harmless change; final latent std within 2x of the VAE's latent std of world images.", "",
                  "| family | SDPA math | channels-last | half steps | late 1e-2 | ratios (half, late) | target | "
                  "latent std (gen / world) | target |", "|---|---|---|---|---|---|---|---|---|"]
        for fam, row in results["floor"].items():
            mv = lambda k: f"{_f(row[k]['mean_abs'])} / {_f(row[k]['ssim_min'], 4)}"  # noqa: E731
            ratio = row["final_latent_std"] / row["world_latent_std"]
            lines.append(f"| {fam} | {mv('harmless_sdpa_math')} | {mv('harmless_channels_last')} | {mv('half_steps')} | "
                         f"{mv('perturb_late_0.01')} | {_f(row['ratio_half_steps'], 1)}, {_f(row['ratio_late_1e-2'], 1)} | "
                         f"{_ok(min(row['ratio_half_steps'], row['ratio_late_1e-2']) >= 10)} | "
                         f"{_f(row['final_latent_std'])} / {_f(row['world_latent_std'])} | {_ok(0.5 <= ratio <= 2)} |")
        lines += ["", "Perturbation curve (relative noise on the denoiser output; worst-image SSIM, all steps | last "
                  "quarter):", "", "| family | 1e-4 | 1e-3 | 1e-2 | 1e-1 |", "|---|---|---|---|---|"]
        for fam, row in results["floor"].items():
            cells = [f"{_f(row[f'perturb_all_{r:g}']['ssim_min'], 4)} \\| {_f(row[f'perturb_late_{r:g}']['ssim_min'], 4)}"
                     for r in (1e-4, 1e-3, 1e-2, 1e-1)]
            lines.append(f"| {fam} | " + " | ".join(cells) + " |")
        lines.append("")
    if "backends" in results:
        lines += ["## Built-in lossy backends at 32 px (vs eager of the same family)", "",
                  "SSIM: worst / mean image; judge: colour, shape (text-to-image), class (DiT) or edit success; "
                  "FID delta: domain FID vs world renderings minus eager's; skipped: fraction of the denoiser's "
                  "attention + resnet calls not made.", "",
                  "| family | backend | SSIM | judge | FID delta | skipped | note |", "|---|---|---|---|---|---|---|"]
        for fam, rows in results["backends"].items():
            for name, row in rows.items():
                if name == "eager" or "n/a" in row:
                    continue
                if "error" in row:
                    lines.append(f"| {fam} | {name} | - | - | - | - | error: {row['error']} |")
                    continue
                acc = row["judge"]
                judge = (f"{_pct(acc['colour'])}, {_pct(acc['shape'])}" if task(fam) == "text-to-image" else
                         _pct(acc.get("class", acc.get("success"))))
                note = "silent no-op" if row["silent_no_op"] else ""
                lines.append(f"| {fam} | {name} | {_f(row['ssim_min'])} / {_f(row['ssim_mean'])} | {judge} | "
                             f"{_f(row['fid_delta'])} | {_pct(row['skipped'])} | {note} |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=build.WEIGHTS)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("testbed.md"))
    parser.add_argument("--sections", default="judges,eager,condition,floor,backends")
    parser.add_argument("--families", default=",".join(ALL))
    parser.add_argument("--prompts", type=int, default=48, help="evaluation prompts per family (eager)")
    parser.add_argument("--floor-prompts", type=int, default=4)
    parser.add_argument("--backend-prompts", type=int, default=8)
    parser.add_argument("--judge-images", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    torch.set_num_threads(args.threads)
    items = world.evaluation_items(args.prompts)
    started = time.perf_counter()
    results: dict = {"command": "PYTHONPATH=src python benchmarks/testbed.py " + " ".join(argv or sys.argv[1:]),
                     "threads": args.threads, "prompts": args.prompts}
    json_path = args.out.with_suffix(".json")
    if json_path.is_file():  # sections run separately accumulate in one report
        results = {**json.loads(json_path.read_text()), **{k: v for k, v in results.items() if k != "command"}}
        results.setdefault("commands", []).append("PYTHONPATH=src python benchmarks/testbed.py "
                                                  + " ".join(argv or sys.argv[1:]))
    for section in args.sections.split(","):
        fn = {"judges": lambda: section_judges(args, args.weights),
              "eager": lambda: section_eager(args, args.weights, items),
              "condition": lambda: section_condition(args, args.weights),
              "floor": lambda: section_floor(args, args.weights, items),
              "backends": lambda: section_backends(args, args.weights, items)}[section]
        t0 = time.perf_counter()
        results[section] = fn()
        results.setdefault("seconds", {})[section] = round(time.perf_counter() - t0, 1)
        json_path.write_text(json.dumps(results, indent=1, default=str))
    write_report(results, args.out, args.weights)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
