"""Measuring a backend's images for the distribution gate: metric models held once, values per
prompt, features per set, and the per-backend numbers the tables print.

`MetricModels` is the session's holder: a CLIP ViT-L, an HPS ViT-H and an Inception take
seconds and gigabytes to load, so each is built on first use and kept, on the run's device,
batched. With `random_weights` it builds the offline random-weight models instead (CPU runs;
every label says so). It never falls back from real to random on its own.

Everything here is a plain function of images: `measure` for one backend's set (with the
reference's images for LPIPS/SSIM, or None for the reference itself), `summarize` for the
tables. A statistic a set is too small for comes back as its `InsufficientSamples`, never
as a number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accelgate.config.distribution import METRICS


class MetricModels:
    """The feature models of a session, built on first use and kept: a CLIP ViT-L and an HPS
    ViT-H take seconds and gigabytes to load, so once per session, not per case. A weights
    problem is kept too, so later cases report it without trying again."""

    def __init__(self, settings: dict, device: str, random_weights: bool):
        self.settings, self.device, self.random_weights = settings, device, random_weights
        self._models: dict[str, Any] = {}
        self._errors: dict[str, Exception] = {}
        self._real: dict[tuple, Any] = {}

    def get(self, key: str):
        from accelgate.metrics.weights import MetricWeightsCorrupt, MetricWeightsMissing

        if key in self._errors:
            raise self._errors[key]
        if key not in self._models:
            try:
                self._models[key] = self._build(key)
            except (MetricWeightsMissing, MetricWeightsCorrupt) as error:
                self._errors[key] = error
                raise
        return self._models[key]

    def missing(self, keys) -> list[str]:
        """Load what `keys` need; why each absent one is absent (a corrupt weight raises instead)."""
        from accelgate.metrics.weights import MetricWeightsMissing

        out = []
        for key in sorted(keys):
            try:
                self.get(key)
            except MetricWeightsMissing as error:
                out.append(error.skip_reason)
            except ModuleNotFoundError as error:  # the optional `metrics` extra is not installed
                out.append(f"{key}: {error}; the distribution metrics need the metrics extra: "
                           "pip install 'accelgate[metrics]'")
        return out

    def labels(self) -> dict[str, str]:
        return {key: model.label for key, model in sorted(self._models.items())}

    def _build(self, key: str):
        from accelgate.metrics.aesthetic import AestheticScorer, load_aesthetic_head
        from accelgate.metrics.lpips import LpipsMetric

        s, device, batch, weights = self.settings, self.device, self.settings["batch_size"], self.settings["weights"]
        if self.random_weights:
            from accelgate.metrics import offline

            builders = {
                "clip": lambda: offline.tiny_clip(device=device, batch_size=batch),
                "aesthetic": lambda: AestheticScorer(self.get("clip"), offline.random_aesthetic_head(),
                                                     label=f"aesthetic head, {offline.RANDOM_LABEL}",
                                                     random_weights=True),
                "hps": lambda: offline.tiny_hps_scorer(version=s["hps_version"], device=device),
                "inception": lambda: offline.TinyFeatureExtractor(device=device, batch_size=batch),
                "lpips": lambda: LpipsMetric(s["lpips_net"], device=device, random_backbone=True),
            }
            return builders[key]()
        from accelgate.metrics.clip import DEFAULT_CLIP, ClipFeatures
        from accelgate.metrics.features import InceptionFeatures
        from accelgate.metrics.hps import HPSScorer

        if key == "clip":
            return ClipFeatures.load(weights.get("clip", DEFAULT_CLIP), device=device, batch_size=batch)
        if key == "aesthetic":
            head = load_aesthetic_head(weights.get("aesthetic"))  # the small file first: a miss costs no CLIP load
            clip = self.get("clip")
            if clip.embed_dim != head.input_size:  # the head is trained on ViT-L/14 embeddings only
                clip = ClipFeatures.load(DEFAULT_CLIP, device=device, batch_size=batch)
            return AestheticScorer(clip, head)
        if key == "hps":
            return HPSScorer.load(s["hps_version"], weights.get("hps"), device=device, batch_size=batch)
        if key == "inception":
            return InceptionFeatures(weights.get("inception"), device, batch)
        return LpipsMetric(s["lpips_net"], weights.get("lpips"), device=device)

    def real_features(self, folder: str, size: int):
        """Features of the real image set at the generated size, extracted once per session.

        `folder` is a directory of images, or "skimage": the photographs scikit-image ships
        (astronaut, chelsea, coffee, rocket), so FID/KID vs real images runs offline in CI too.
        """
        from accelgate.metrics.features import real_image_batches

        key = (folder, size)
        if key not in self._real:
            if folder == SKIMAGE_PHOTOS:
                batches = [_sample_photos(size)]
            else:
                batches = real_image_batches(folder, size, limit=self.settings["real_images_limit"])
            self._real[key] = self.get("inception").extract_batches(batches, f"real images {folder}")
        return self._real[key]


SKIMAGE_PHOTOS = "skimage"


def _sample_photos(size: int):
    """scikit-image's photographs as uint8 NCHW, shorter side to `size` (bicubic) then center-cropped,
    the way `real_image_batches` prepares a folder."""
    import torch
    from PIL import Image

    from accelgate.prompts.sets import SAMPLE_IMAGES, load_sample_image

    out = []
    for name in SAMPLE_IMAGES:
        image = load_sample_image(name)
        scale = size / min(image.size)
        w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        image = image.resize((w, h), Image.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        out.append(torch.from_numpy(np.array(image.crop((left, top, left + size, top + size)))).permute(2, 0, 1))
    return torch.stack(out)


@dataclass
class Measured:
    """One backend's images of a prompt set and everything measured on them."""

    images: list[np.ndarray]
    items: list
    seconds: float
    values: dict[str, np.ndarray]  # per prompt
    features: Any = None  # ImageFeatures, for the set metrics
    own: dict[str, Any] = field(default_factory=dict)  # IS, FID/KID vs real: DistributionResult or the reason
    summaries: dict[str, "Summary"] = field(default_factory=dict)


@dataclass
class Summary:
    """One backend's value of one metric, as the tables print it."""

    value: float | None  # None: not computed (see note)
    low: float | None = None  # CI of the mean over prompts
    high: float | None = None
    std: float | None = None  # IS over splits, KID over subsets
    n: int = 0
    note: str = ""
    by_style: dict[str, tuple[float, float | None, float | None, int]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data = {"value": json_float(self.value), "n": self.n}
        if self.low is not None:
            data["ci"] = [json_float(self.low), json_float(self.high)]
        if self.std is not None:
            data["std"] = json_float(self.std)
        if self.note:
            data["note"] = self.note
        if self.by_style:
            data["by_style"] = {k: {"value": json_float(v[0]), "ci": [json_float(v[1]), json_float(v[2])], "n": v[3]}
                                for k, v in self.by_style.items()}
        return data


def json_float(value):
    """A finite float for results.json (9 significant digits: a tiny FID must not round to 0), else None."""
    return None if value is None or not np.isfinite(value) else float(f"{float(value):.9g}")


def measure(case, generation, names, models, reference: Measured | None, settings: dict) -> Measured:
    """Per-prompt values and set features; `reference=None` measures the reference itself."""
    from accelgate.metrics.clip import directional_similarity, image_similarity
    from accelgate.metrics.hps import HPS_TABLE_SCALE
    from accelgate.metrics.pairwise import ssim

    images, items, n = generation.images, generation.items, len(generation.images)
    prompts, values = [i.prompt for i in items], {}
    if "clip_score" in names:  # an edit is scored against the caption of the intended result
        texts = [i.output_caption or i.prompt for i in items] if case.model.task == "edit" else prompts
        # unclamped: a clamp at 0 turns differences below it into ties; a trained CLIP scores no
        # matching prompt below 0, so the values are torchmetrics' there
        values["clip_score"] = models.get("clip").clip_score(images, texts, clamp=False).numpy()
    if "aesthetic" in names:
        values["aesthetic"] = models.get("aesthetic").score(images).numpy()
    if "hps" in names:
        values["hps"] = HPS_TABLE_SCALE * models.get("hps").score(images, prompts).numpy()
    if {"directional_similarity", "image_similarity"} & set(names):
        clip = models.get("clip")
        source = clip.image_features(input_images(case, items), "input images")
        edited = clip.image_features(images, "edited images")
        values["image_similarity"] = image_similarity(source, edited).numpy()
        if "directional_similarity" in names:
            bare = [i.label() for i in items if not (i.input_caption and i.output_caption)]
            if bare:
                raise ValueError(f"CLIP directional similarity needs an input and an output caption per item; "
                                 f"{len(bare)} item(s) of the prompt set have none, e.g. {bare[0]!r}")
            values["directional_similarity"] = directional_similarity(
                source, edited, clip.text_features([i.input_caption for i in items], "input captions"),
                clip.text_features([i.output_caption for i in items], "output captions")).numpy()
    if "lpips" in names:
        values["lpips"] = np.zeros(n) if reference is None else models.get("lpips")(images, reference.images).numpy()
    if "ssim" in names:
        values["ssim"] = np.ones(n) if reference is None else np.array(
            [ssim(a, b) for a, b in zip(images, reference.images)])
    values = {k: v.astype(np.float64) for k, v in values.items() if k in names}
    measured = Measured(images, items, generation.seconds, values)
    if any(METRICS[name].kind == "set" for name in names):
        from accelgate.metrics.set_stats import fid, inception_score

        measured.features = models.get("inception").extract(images, f"{case.id} images")
        if "is" in names:
            splits = max(1, min(settings["is_splits"], n // 2))
            measured.own["is"] = attempt(lambda: inception_score(measured.features, splits=splits))
        real = settings["real_images"].get(case.model.id)
        if real is not None:
            source = real if real == SKIMAGE_PHOTOS else str(Path(real).expanduser())
            real_set = attempt(lambda: models.real_features(source, case.height))
            for name, function in (("fid_real", fid), ("kid_real", kid_function(settings))):
                if name in names:
                    measured.own[name] = real_set if isinstance(real_set, Exception) else attempt(
                        lambda f=function: f(measured.features, real_set, what="vs real images"))
    return measured


def kid_function(settings: dict):
    """KID at the configured subset size (default: min(1000, N), the library's)."""
    from accelgate.metrics.set_stats import kid

    return lambda candidate, reference, what="": kid(candidate, reference, subset_size=settings["kid_subset_size"],
                                                     what=what)


def input_images(case, items) -> list[np.ndarray]:
    """The edit inputs exactly as the pipeline got them (generate.call_arguments resizes the same way)."""
    from PIL import Image

    from accelgate.prompts.sets import load_sample_image

    return [np.array(load_sample_image(i.image).resize((case.width, case.height), Image.LANCZOS))
            for i in items]


def summarize(measured: Measured, names, set_results: dict, settings: dict) -> None:
    """Mean +/- CI per metric (and per style), IS/KID +/- std; done once per backend's set."""
    from accelgate.metrics.stats import mean_with_ci

    confidence, resamples = settings["confidence"], settings["bootstrap_resamples"]
    for name in names:
        if METRICS[name].kind != "set":
            if name in measured.summaries:
                continue
            values = measured.values[name]
            summary = Summary(*mean_with_ci(values, confidence, resamples), n=len(values))
            styles = [i.style for i in measured.items]
            if name == "hps" and any(styles):
                for style in dict.fromkeys(styles):
                    picked = values[[s == style for s in styles]]
                    summary.by_style[style] = (*mean_with_ci(picked, confidence, resamples), len(picked))
            measured.summaries[name] = summary
            continue
        found = set_results.get(name) if name in ("fid", "kid") else measured.own.get(name)
        if isinstance(found, Exception):
            measured.summaries[name] = Summary(None, note=f"not computed: {found}")
        elif found is not None:
            measured.summaries[name] = Summary(found.value, std=found.std if name != "fid" else None,
                                               n=found.n_candidate, note=found.note)


def attempt(function):
    """A statistic, or the `InsufficientSamples` that says why the set is too small for it."""
    import warnings

    from accelgate.metrics.features import InsufficientSamples

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # FID's small-N warning: kept as the result's note
            return function()
    except InsufficientSamples as error:
        return error
