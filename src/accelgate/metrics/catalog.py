"""Every metric accelgate measures, in one place: its direction, its kind, its tasks, the gates
that use it and their default tolerances. Pure data (no torch): the config validates against
it before anything loads.

Kinds:
- "pair":   one candidate image against the reference image of the same prompt and seed
            (SSIM, PSNR, max abs, colour shift, LPIPS);
- "prompt": one score per prompt of the candidate's own image (CLIP score, HPS v2, aesthetic,
            the edit similarities), paired with the reference's score of the same prompt;
- "set":    one number per image set (FID, KID, IS), compared with the reference's.

Gates: "quality" judges the worst image of a case against the stored baseline with
`quality_tolerance`; "distribution" judges deltas vs the reference backend over a prompt set
with `tolerance` (real metric models) or `random_tolerance` (the random-weight CPU models).
The functions live beside this file: pairwise.py, clip.py, hps.py, aesthetic.py, lpips.py,
features.py and set_stats.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("pair", "prompt", "set")
GATES = ("quality", "distribution")
HPS_VERSIONS = {"v2.0": "hps-v2.0", "v2.1": "hps-v2.1"}  # version -> weights key (scores not comparable)
LPIPS_NETS = ("alex", "vgg", "squeeze")
RANDOM_LABEL = "random-weight (CPU test model: values carry no quality meaning)"  # offline metric models


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # the report's row label, without the direction arrow
    higher_is_better: bool
    kind: str
    tasks: tuple[str, ...]
    gates: tuple[str, ...]
    needs: str | None = None  # the metric model it needs (a MetricModels key), None for plain pixels
    unit: str = ""
    qualifier: str = ""  # shown after the arrow, e.g. "(vs real images)"
    quality_tolerance: float | None = None  # default per-image threshold (the quality gate)
    tolerance: float | None = None  # default delta tolerance, real metric models, table units
    random_tolerance: float | None = None  # for the random-weight metric models (their own scale)
    fmt: str = "{:.4f}"  # the quality table's number format
    bounds: tuple[float, float] = (-math.inf, math.inf)  # the values it can take: a threshold outside is refused
    compare_floor: float | None = None  # a smaller move between two runs is noise (`report.compare`)

    def __post_init__(self) -> None:
        if self.kind not in KINDS or not set(self.gates) <= set(GATES):
            raise ValueError(f"metric {self.name!r}: kind {self.kind!r} / gates {self.gates!r}")

    @property
    def arrow(self) -> str:
        return "⬆️" if self.higher_is_better else "⬇️"

    @property
    def row_label(self) -> str:
        return f"{self.label} {self.arrow}" + (f" {self.qualifier}" if self.qualifier else "")


_IMAGES = ("text-to-image", "image-to-image")
_SETS = _IMAGES + ("class-conditional",)
_ALL = _SETS + ("edit",)
_Q, _D, _QD = ("quality",), ("distribution",), ("quality", "distribution")

# Quality defaults: what a lossless acceleration must meet; measured on the tiny CPU matrix,
# lossless backends give SSIM 1.0 and differ by at most a few uint8 levels.
# Distribution rows are in the order of the seed-000 table (FID, IS, CLIP, aesthetic, HPS v2,
# SSIM), then the extra rows. Real-model defaults are strict starting points in table units.
# With seed evidence: HPS 0.5 (seed 001: compile -0.00, quantization -0.06, DeepCache -1.47),
# aesthetic 0.1 and CLIP 0.5 (seed 000: compile within 0.003 and 0.001), FID-vs-real 1.0 (seed
# 000: -0.1), IS 1.0 (seed 000: +/-0.5-0.7 over splits). FID/KID vs the reference set, LPIPS
# and the edit similarities have no published reference: measure them on the GPU run, then
# loosen per backend with a reason. Random-weight defaults were measured on the catalog's tiny
# pipelines (4 prompts, 32 px, CPU): lossless and mildly lossy backends (channels-last, bf16,
# fp8, tomesd, DeepCache on SD) give LPIPS <= 0.0018 (CI <= 0.0042) and FID vs the reference
# set <= 4.4e-5; denoiser noise (sigma 0.5, 1.0) gives LPIPS >= 0.022 and FID >= 5.3e-4, naive
# step skipping LPIPS 0.016-0.023 and FID 3.8e-4-2.8e-3 (DeepCache on the tiny SDXL, SSIM 0.93,
# reaches LPIPS 0.0077 and fails too). Random features do not separate damage from none for
# IS (|delta| <= 4e-6), KID, and FID/KID vs real photographs: those are reported only.
CATALOG: tuple[Metric, ...] = (
    Metric("ssim", "SSIM", True, "pair", _ALL, _QD, quality_tolerance=0.995, fmt="{:.4f}",
           bounds=(-1.0, 1.0), compare_floor=0.001),
    Metric("psnr", "PSNR (dB)", True, "pair", _ALL, _Q, unit="dB", quality_tolerance=35.0, fmt="{:.1f}",
           bounds=(0.0, math.inf), compare_floor=0.5),
    Metric("max_abs", "Max abs diff (levels)", False, "pair", _ALL, _Q, unit="levels", quality_tolerance=64.0,
           fmt="{:.0f}", bounds=(0.0, 255.0), compare_floor=2.0),
    Metric("color_shift", "Colour shift (levels)", False, "pair", _ALL, _Q, unit="levels", quality_tolerance=1.0,
           fmt="{:.2f}", bounds=(0.0, 255.0), compare_floor=0.25),
    Metric("fid_real", "FID", False, "set", _SETS, _D, "inception", qualifier="(vs real images)", tolerance=1.0),
    Metric("fid", "FID", False, "set", _SETS, _D, "inception", qualifier="(vs reference images)", tolerance=2.0,
           random_tolerance=2e-4),
    Metric("is", "IS", True, "set", _SETS, _D, "inception", tolerance=1.0),
    Metric("clip_score", "CLIP Score", True, "prompt", _IMAGES + ("edit",), _D, "clip", tolerance=0.5,
           random_tolerance=0.5),
    Metric("aesthetic", "Aesthetic Score", True, "prompt", _IMAGES + ("edit",), _D, "aesthetic", tolerance=0.1,
           random_tolerance=1e-4),
    Metric("hps", "HPS v2", True, "prompt", _IMAGES, _D, "hps", tolerance=0.5, random_tolerance=1.0),
    Metric("kid_real", "KID", False, "set", _SETS, _D, "inception", qualifier="(vs real images)", tolerance=0.002),
    Metric("kid", "KID", False, "set", _SETS, _D, "inception", qualifier="(vs reference images)", tolerance=0.002),
    Metric("lpips", "LPIPS", False, "pair", _ALL, _D, "lpips", qualifier="(vs reference images)", tolerance=0.2,
           random_tolerance=0.005),
    Metric("directional_similarity", "CLIP directional similarity", True, "prompt", ("edit",), _D, "clip",
           tolerance=0.02, random_tolerance=0.005),
    Metric("image_similarity", "CLIP image similarity", True, "prompt", ("edit",), _D, "clip", tolerance=0.02,
           random_tolerance=0.01),
)


# The distribution table follows seed 000's rows (FID, IS, CLIP, aesthetic, HPS v2, SSIM) first.
_ROW_ORDER = {"distribution": ("fid_real", "fid", "is", "clip_score", "aesthetic", "hps", "ssim", "kid_real", "kid",
                               "lpips", "directional_similarity", "image_similarity")}


def metrics_of(gate: str) -> dict[str, Metric]:
    """The metrics a gate uses, by name, in the order its report prints them."""
    if gate not in GATES:
        raise ValueError(f"gate {gate!r}; gates: {', '.join(GATES)}")
    used = {m.name: m for m in CATALOG if gate in m.gates}
    order = _ROW_ORDER.get(gate, tuple(used))
    return {name: used[name] for name in order}


PER_IMAGE = metrics_of("quality")  # the quality gate's per-image metrics (pairwise.py computes them)
DISTRIBUTION = metrics_of("distribution")
