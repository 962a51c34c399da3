"""One quality run's state and the case -> verdict flow, usable without pytest.

load (fresh pipeline) -> model hash -> baseline read + staleness -> apply backend ->
generate -> degenerate guard -> pairwise metrics -> judge -> artifacts. Anything a
backend or pipeline raises becomes that case's `error` verdict, never a crash of the run.
"""
from __future__ import annotations

import gc
import tempfile
import traceback
from pathlib import Path
from typing import Any

from accelgate.baselines import BaselineError, BaselineStore, build_manifest, stale_fields, write_png
from accelgate.config import Config, format_resolution
from accelgate.generate import DegenerateOutput, Generation, generate, generation_settings, prompt_items
from accelgate.matrix import Case, Matrix
from accelgate.metrics.pairwise import PAIRWISE_METRICS, compare_images, diff_image
from accelgate.verdict import Check, ImageRecord, Verdict, judge, problem


class QualityRun:
    """Session state for one run: config, device, baseline store, results, artifacts."""

    def __init__(self, config: Config, device: str, matrix: Matrix, store: BaselineStore,
                 report_dir: Path | None = None, regen: bool = False):
        self.config = config
        self.device = device
        self.matrix = matrix
        self.store = store
        self.report_dir = Path(report_dir) if report_dir else None
        self.regen = regen
        self.results: list[Verdict] = []
        self.model_hashes: dict[str, str] = {}
        self.stale_models: dict[str, str] = {}
        self.written_baselines: list[Path] = []
        self._scratch: Path | None = None

    # -- what cannot run here -------------------------------------------------------------
    def skip_reason(self, case: Case) -> str | None:
        """Why a case cannot run on this machine, phrased as what to install or provide."""
        from accelgate.models.loading import check_available

        if case.model.gpu and not self.device.startswith("cuda"):
            return (f"{case.model.id} is a real model marked gpu and needs a CUDA device (running on "
                    f"{self.device}); run on a GPU machine with --device cuda")
        reason = case.backend.skip_reason(self.device)
        if reason:
            return reason
        if case.model.source == "hub":
            return check_available(case.model, self.config.model_paths.get(case.model.id))
        return None

    # -- the flow -------------------------------------------------------------------------
    def evaluate(self, case: Case) -> Verdict:
        reason = self.skip_reason(case)
        if reason:
            verdict = problem(case, "skipped", reason)
        else:
            try:
                verdict = self._evaluate(case)
            except Exception as error:  # a backend or pipeline failure is this case's error
                verdict = problem(case, "error", self._describe(case, error))
            finally:
                gc.collect()
                if self.device.startswith("cuda"):
                    import torch

                    torch.cuda.empty_cache()
        self.results.append(verdict)
        return verdict

    def _describe(self, case: Case, error: Exception) -> str:
        frames = traceback.extract_tb(error.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        return f"{type(error).__name__}{where}: {error}"

    def load(self, case: Case):
        from accelgate.models.loading import load_pipeline, model_hash, prepare_resolution

        pipe = load_pipeline(case.model, self.device, path=self.config.model_paths.get(case.model.id))
        if case.model.id not in self.model_hashes:
            self.model_hashes[case.model.id] = model_hash(pipe)
        prepare_resolution(pipe, case.model, case.height, case.width)
        return pipe

    def regen_command(self, case_id: str) -> str:
        """The exact command that rewrites one case's baseline."""
        model, _, resolution = case_id.split("/")
        ref_id = f"{model}/{self.config.reference}/{resolution}"
        parts = ["pytest", "-m", "quality", "--regen-baselines", "-k", f'"{ref_id}"']
        if self.config.source and self.config.source.name != "pyproject.toml":
            parts += ["--accelgate-config", str(self.config.source)]
        if self.device != "cpu":
            parts += ["--device", self.device]
        return " ".join(parts)

    def _evaluate(self, case: Case) -> Verdict:
        items = prompt_items(case.model)
        settings = generation_settings(case.model)
        resolution = format_resolution(case.resolution)
        pipe = self.load(case)
        model_hash = self.model_hashes[case.model.id]
        if self.regen:
            return self._write_baseline(case, pipe, items, settings, model_hash)
        try:
            baseline = self.store.read(case.id, case.model.id, resolution)
        except BaselineError as error:
            return problem(case, "failed", f"baseline problem: {error}")
        records = [{"prompt": i.label(), "seed": case.model.seed + n} for n, i in enumerate(items)]
        stale = stale_fields(baseline, settings, records, model_hash)
        if stale:
            if any(s.startswith("model_hash") for s in stale):
                self.stale_models[case.model.id] = stale[-1]
            return problem(case, "failed", "stale baseline: it was made with other settings than the config "
                           "asks for:\n  " + "\n  ".join(stale) + f"\nRegenerate it with:\n    {self.regen_command(case.id)}")
        wrong = [im.shape for im in baseline.images if im.shape != (case.height, case.width, 3)]
        if wrong:
            return problem(case, "failed", f"baseline images are {wrong[0][1]}x{wrong[0][0]} but the case is "
                           f"{resolution}: the baseline is of the wrong size. Regenerate it with:\n    "
                           f"{self.regen_command(case.id)}")
        pipe = case.backend.apply(pipe, **dict(case.backend.options))
        self._check_pipeline(case, pipe)
        try:
            generation = generate(pipe, case, items)
        except DegenerateOutput as error:
            return problem(case, "failed", str(error))
        return self._compare(case, generation, baseline)

    def _check_pipeline(self, case: Case, pipe: Any) -> None:
        from diffusers import DiffusionPipeline

        if not isinstance(pipe, DiffusionPipeline):
            raise TypeError(f"backend {case.backend.name!r} returned {type(pipe).__name__}, not a diffusers "
                            "pipeline; its apply/factory must return the pipeline it was given (or a new one)")

    def _write_baseline(self, case, pipe, items, settings, model_hash) -> Verdict:
        generation = generate(pipe, case, items)
        records = [{"prompt": i.label(), "seed": s} for i, s in zip(generation.items, generation.seeds)]
        manifest = build_manifest(case, settings, model_hash, records, self.store.device_class)
        path = self.store.write(case.model.id, format_resolution(case.resolution), manifest, generation.images)
        self.written_baselines.append(path)
        verdict = problem(case, "passed", f"baseline written to {path}", timing={"generate_s": generation.seconds})
        return verdict

    # -- comparison and artifacts ---------------------------------------------------------
    def _compare(self, case: Case, generation: Generation, baseline) -> Verdict:
        records, per_metric = [], {name: [] for name in PAIRWISE_METRICS}
        for index, (image, reference) in enumerate(zip(generation.images, baseline.images)):
            values = compare_images(image, reference)
            for name, value in values.items():
                per_metric[name].append(value)
            records.append(ImageRecord(generation.items[index].label(), generation.seeds[index], metrics=values))
        checks = []
        for name, metric in PAIRWISE_METRICS.items():
            values = per_metric[name]
            worst = min(values) if metric.higher_is_better else max(values)
            tolerance = self.config.tolerance(name, case.model.id, case.backend.name)
            checks.append(Check(name, worst, tolerance.threshold, metric.higher_is_better, tolerance.reason,
                                note=f"worst of {len(values)} image(s)" if len(values) > 1 else ""))
        verdict = judge(case, checks, records, {"generate_s": generation.seconds})
        if self.report_dir is not None or not verdict.passed:
            self._write_artifacts(case, verdict, generation, baseline)
        return verdict

    def artifacts_root(self) -> Path:
        if self.report_dir is not None:
            return self.report_dir
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="accelgate-failures-"))
        return self._scratch

    def _write_artifacts(self, case: Case, verdict: Verdict, generation: Generation, baseline) -> None:
        root = self.artifacts_root()
        folder = Path("images") / case.model.id / case.backend.name / format_resolution(case.resolution)
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index, record in enumerate(verdict.images):
            paths = {kind: folder / f"{index:02d}-{kind}.png" for kind in ("candidate", "baseline", "diff")}
            write_png(root / paths["candidate"], generation.images[index])
            write_png(root / paths["baseline"], baseline.images[index])
            write_png(root / paths["diff"], diff_image(generation.images[index], baseline.images[index]))
            relative = self.report_dir is not None
            for kind, path in paths.items():
                setattr(record, kind, str(path) if relative else str(root / path))


def summary_counts(results: list[Verdict]) -> dict[str, int]:
    """How many verdicts have each outcome: the one count every summary line and report uses."""
    counts: dict[str, int] = {}
    for verdict in results:
        counts[verdict.outcome] = counts.get(verdict.outcome, 0) + 1
    return counts

