"""The distribution gate: does an accelerated backend still make *equally good* images?

Per-image SSIM says whether the pixels stayed the same; this asks whether the images are as
good, over a prompt set. For one case it generates the set's images with the candidate
backend and (once per model x resolution x prompt set per session, cached) with the
reference backend, same prompts and seeds, and measures per prompt CLIP score, aesthetic
score, HPS v2 (x100, as published tables), CLIP directional and image similarity (edit
models), LPIPS and SSIM against the reference image of the same prompt and seed; and per set
FID and KID against the reference set, FID/KID against a real image folder when configured
(the seed-000 protocol), and the Inception Score.

The gate is always a delta vs the reference backend, direction-aware (a higher HPS never
fails), with tolerances from `[distribution.tolerances]`:
- per-prompt metrics: `paired_noninferiority` (bootstrap CI of the mean paired difference)
  and the point delta. Non-inferior -> pass; inferior (whole CI beyond the tolerance) ->
  fail; **inconclusive** (the CI straddles it) -> fail when the mean delta itself is beyond
  the tolerance, else pass with a `DistributionWarning`, and fail under `--strict-metrics`.
  Why: "not shown to be fine" is not "shown to be worse". Failing it by default makes every
  small prompt set a false alarm, passing it silently would hide a drop; so it passes loudly
  (warning + report say how many prompts would settle it), and the nightly run, which has
  hundreds of prompts and `--strict-metrics`, must show non-inferiority outright.
- set metrics (one number per backend): `delta_gate` on the delta.
- a statistic the set is too small for (FID/KID/IS on a few images) is not invented: the check
  says why it is missing; a warning by default, a failure under `--strict-metrics`.
Check values are deltas (candidate - reference); FID/KID vs the reference set and LPIPS are
distances to the reference, hence their own delta. SSIM is reported here and gated per image.

`metric_models = "random"` (and the CPU metric run) uses the offline random-weight models of
metrics/offline.py, so every code path runs on a CPU; their values are labelled and gated with
`random_tolerances`, measured on the tiny pipelines (their scales are their own). With "real",
a missing weight skips the case with the weights module's reason (a failure under
`--strict-metrics`) and a corrupt one fails it: never a silent fall-back to random weights.

Layout: config/distribution.py (the `[distribution]` schema), metrics/catalog.py (the metric
table), measure.py (metric models held once, measuring one backend's set), this module (the
run: cases, reference cache, the gate, verdicts), report.py (its tables). No pytest here:
plugin.py is the pytest side.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from accelgate.config.distribution import metrics_for, tolerance_for
from accelgate.distribution.measure import (
    SKIMAGE_PHOTOS, Measured, MetricModels, Summary, json_float, measure, summarize,
)
from accelgate.metrics.catalog import DISTRIBUTION as METRICS
from accelgate.metrics.catalog import Metric
from accelgate.session import Session, verdict_for_exception
from accelgate.verdict import Check, Verdict, judge, problem

RUNS = ("prompt-set", "cpu-metrics")  # the slow prompt-set run; the small CPU run of every metric


class DistributionWarning(UserWarning):
    """A gate that passed without being shown to (inconclusive, or a statistic too few images allow)."""


@dataclass
class CaseResult:
    """One case of the distribution run: its verdict and the numbers the tables print."""

    run: str
    case: Any
    verdict: Verdict
    prompt_set: str = ""
    metric_models: dict[str, str] = field(default_factory=dict)
    random_weights: bool = False
    summaries: dict[str, Summary] = field(default_factory=dict)
    reference: dict[str, Summary] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = self.verdict.as_json()
        data.update(run=self.run, prompt_set=self.prompt_set, random_weights=self.random_weights,
                    metric_models=self.metric_models, warnings=self.warnings,
                    summary={k: s.as_json() for k, s in self.summaries.items()},
                    reference_summary={k: s.as_json() for k, s in self.reference.items()},
                    prompts=self.prompts, values={k: [json_float(v) for v in vs] for k, vs in self.values.items()})
        return data


@dataclass
class IsolatedCaseResult(CaseResult):
    """A case run in its own process (--accelgate-isolate): its verdict and its report entry as
    the child wrote them."""

    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return dict(self.data)


def isolated_case(session: Session, case, *, run: str, strict: bool, prompt_limit: int | None) -> tuple:
    """`--accelgate-isolate`'s runner (in the child process): verdict, report entry, warnings."""
    result = DistributionRun(session, dict(session.config.distribution), strict=strict,
                             prompt_limit=prompt_limit).evaluate(run, case)
    return result.verdict, result.as_json(), list(result.warnings)


class DistributionRun:
    """The distribution gate's state for one run, on the core session (config, device, loading)."""

    def __init__(self, session: Session, settings: dict, *, strict: bool = False, prompt_limit: int | None = None):
        self.session, self.config = session, session.config
        self.settings, self.strict, self.prompt_limit = settings, strict, prompt_limit
        self._models: dict[bool, MetricModels] = {}
        self._references: dict[tuple, Measured | Exception] = {}
        self._sets: dict[tuple, tuple[list, str]] = {}
        self.results: list[CaseResult] = []

    def metric_models(self, random_weights: bool) -> MetricModels:
        if random_weights not in self._models:
            self._models[random_weights] = MetricModels(self.settings, self.session.device, random_weights)
        return self._models[random_weights]

    def cases(self, run: str, matrix) -> list:
        """The run's cases, one resolution per model: the first declared (prompt-set run; the model's
        native one) or the smallest (CPU run). Narrowing options have already shaped `matrix`."""
        if run == "cpu-metrics":
            models, backends = self.settings["cpu_run"]["models"], self.settings["cpu_run"]["backends"]
        else:
            models = self.settings["models"] or [m.id for m in self.config.models if m.gpu]
            backends = self.settings["backends"] or [b.spec.name for b in self.config.backends]
        chosen = [c for c in matrix.cases if c.model.id in models and c.backend.name in backends]
        pick = {}
        for c in chosen:
            best = pick.get(c.model.id)
            if best is None or (run == "cpu-metrics" and c.width * c.height < best[0] * best[1]):
                pick[c.model.id] = c.resolution
        return [c for c in chosen if c.resolution == pick[c.model.id]]

    def why_no_case(self, run: str) -> str:
        """Why a run has no case in this (narrowed) matrix, for its placeholder's skip reason."""
        cpu = self.settings["cpu_run"]
        if run == "cpu-metrics" and not (cpu["models"] and cpu["backends"]):
            return ("[distribution.cpu_run] names no models and backends; list tiny models and a few backends "
                    "there to run every metric on CPU with random-weight metric models")
        if run == "cpu-metrics":
            return "the models and backends of [distribution.cpu_run] select none of this (narrowed) matrix"
        return "[distribution] models (default: the matrix's real, gpu models) select none of this (narrowed) matrix"

    def report_part(self) -> dict[str, Any] | None:
        """This gate's part of results.json (None when it ran no case)."""
        if not self.results:
            return None
        return {"reference": self.config.reference, "strict_metrics": self.strict, "prompt_limit": self.prompt_limit,
                "confidence": self.settings["confidence"], "cases": [r.as_json() for r in self.results],
                "backend_order": [b.spec.name for b in self.config.backends]}

    def record_missing(self, run: str, case, outcome: str, reason: str) -> None:
        """A case that ended without a verdict (a fixture error, an interrupt, the victim check)
        is still a row of the report; the first verdict of a case is the one that counts."""
        if not any(r.run == run and r.verdict.case_id == case.id for r in self.results):
            verdict = problem(case, outcome, reason)
            verdict.kind = "distribution"
            self.results.append(CaseResult(run, case, verdict))

    def reference_case(self, case):
        return replace(case, backend=self.config.backend(self.config.reference).spec, reference=True)

    # -- one case ---------------------------------------------------------------------
    def evaluate(self, run: str, case) -> CaseResult:
        if run not in RUNS:
            raise ValueError(f"unknown distribution run {run!r}; runs: {', '.join(RUNS)}")
        random_weights = run == "cpu-metrics" or self.settings["metric_models"] == "random"
        unavailable = "failed" if self.strict else "skipped"
        try:
            if getattr(self.session, "isolate", False):  # a test double of the session may not say
                verdict, data, notes = self.session.run_isolated(
                    case, "accelgate.distribution.run:isolated_case", run=run, strict=self.strict,
                    prompt_limit=self.prompt_limit)
                result = IsolatedCaseResult(run, case, verdict, random_weights=random_weights, warnings=notes, data=data)
            else:
                result = self._evaluate(run, case, random_weights)
        except (Exception, SystemExit) as error:  # a backend, pipeline or metric failure is this case's verdict
            result = CaseResult(run, case, verdict_for_exception(case, error, unavailable=unavailable,
                                                                 device=self.session.device),
                                random_weights=random_weights)
        finally:
            self.session.cleanup()
        result.verdict.kind = "distribution"
        self.results.append(result)
        return result

    def _unavailable(self, run: str, case, reason: str, random_weights: bool) -> CaseResult:
        if self.strict:
            reason += "\n(--strict-metrics: a missing metric weight or data file is a failure, not a skip)"
        return CaseResult(run, case, problem(case, "failed" if self.strict else "skipped", reason),
                          random_weights=random_weights)

    def _evaluate(self, run: str, case, random_weights: bool) -> CaseResult:
        from accelgate.prompts.files import PromptFileMissing

        reference_case = self.reference_case(case)
        reason = self.session.skip_reason(case) or self.session.skip_reason(reference_case)
        if reason:
            return CaseResult(run, case, problem(case, "skipped", reason), random_weights=random_weights)
        real = self.settings["real_images"].get(case.model.id)
        names = metrics_for(case.model.task, self.settings["metrics"], real is not None)
        try:
            items, described, set_key = self.prompt_items(run, case.model)
        except PromptFileMissing as error:
            source = (self.settings["prompt_sets"].get(case.model.id) or {}).get("source")
            if source:  # a path the user wrote: a typo there must fail, not pass as "data not on this machine"
                return CaseResult(run, case, problem(case, "failed", f"{error}\nThe config names this path explicitly "
                                  f"(distribution.prompt_sets.{case.model.id}); fix the path or remove the entry"),
                                  random_weights=random_weights)
            return self._unavailable(run, case, str(error), random_weights)
        models = self.metric_models(random_weights)
        missing = models.missing({METRICS[n].needs for n in names} - {None})
        if real is not None and real != SKIMAGE_PHOTOS and not Path(real).expanduser().is_dir():
            missing.append(f"real images for FID/KID: {real} is not a directory "
                           f"(distribution.real_images.{case.model.id})")
        if missing:
            return self._unavailable(run, case, "\n".join(missing), random_weights)
        started = time.perf_counter()
        reference = self.reference(reference_case, items, names, models, (random_weights, set_key))
        candidate = reference if case.reference else measure(case, self.generate(case, items), names, models,
                                                             reference, self.settings)
        checks, notes, set_results = self.gate(case, names, candidate, reference, random_weights)
        summarize(candidate, names, set_results, self.settings)
        summarize(reference, names, {}, self.settings)
        timing = {"generate_s": candidate.seconds, "case_s": time.perf_counter() - started}
        verdict = judge(case, checks, None, timing, kind="distribution")
        if not verdict.passed:
            failed = ", ".join(c.metric for c in checks if not c.passed)
            verdict.reason = (f"distribution gate failed vs the reference backend {self.config.reference!r} on "
                              f"{len(items)} prompts ({described}): {failed}")
        return CaseResult(run, case, verdict, described, models.labels(), random_weights, candidate.summaries,
                          reference.summaries, [i.label() for i in items],
                          {k: v.tolist() for k, v in candidate.values.items()}, notes)

    def prompt_items(self, run: str, model) -> tuple[list, str, tuple]:
        from accelgate.generate import model_prompt_set
        from accelgate.prompts.files import load_prompt_file_set
        from accelgate.prompts.sets import PROMPT_SETS

        limit = self.prompt_limit or (self.settings["cpu_run"]["prompt_limit"] if run == "cpu-metrics"
                                      else self.settings["prompt_limit"])
        spec = self.settings["prompt_sets"].get(model.id) or {"name": model.prompt_set, "source": None}
        own = bool(model.prompts) and model.id not in self.settings["prompt_sets"]  # the config's prompts
        key = (spec["name"], model.id if own else spec["source"], limit)
        if key not in self._sets:
            if own or spec["name"] in PROMPT_SETS:
                full = model_prompt_set(model) if own else PROMPT_SETS[spec["name"]]
                items = list(full.limited(limit))
                self._sets[key] = (items, f"{full.name}, {len(items)} of {len(full.items)} prompts")
            else:
                loaded = load_prompt_file_set(spec["name"], spec["source"], limit)
                described = loaded.description if "(first " in loaded.description else (
                    f"{loaded.description}, {len(loaded.items)} prompts")
                self._sets[key] = (list(loaded.items), described)
        items, described = self._sets[key]
        return items, described, key

    def reference(self, reference_case, items, names, models, key) -> Measured:
        """The reference backend's images and measurements, once per model x resolution x set.

        Only the current model's are kept: cases arrive grouped by model, and 3,200 reference
        images at 1024 px are 10 GB that the next model does not need.
        """
        key = (reference_case.model.id, reference_case.resolution) + tuple(key)
        if key not in self._references:
            self._references = {k: v for k, v in self._references.items() if k[0] == key[0]}
            try:
                self._references[key] = measure(reference_case, self.generate(reference_case, items), names,
                                                models, None, self.settings)
            except Exception as error:
                self._references[key] = error
        found = self._references[key]
        if isinstance(found, Exception):
            raise RuntimeError(f"the reference backend {reference_case.backend.name!r} could not make the "
                               f"reference set for {reference_case.id}: {type(found).__name__}: {found}") from found
        return found

    def generate(self, case, items):
        from accelgate.generate import generate

        progress = getattr(self.session, "progress", None)  # the terminal's step progress, when there is one
        return generate(case.backend.apply_to(self.session.load(case)), case, items, progress=progress)

    # -- the gate --------------------------------------------------------------------
    def gate(self, case, names, cand: Measured, ref: Measured,
             random_weights: bool = False) -> tuple[list[Check], list[str], dict]:
        """One check per metric, and the warnings of the ones that passed without being shown to.

        --strict-metrics applies to real metric models only: a random-weight score proves nothing
        either way, so the CPU run keeps the default policy even in the strict nightly job.
        """
        from accelgate.distribution.measure import attempt, kid_function
        from accelgate.metrics.set_stats import fid

        strict = self.strict and not random_weights
        checks, notes, set_results = [], [], {}
        for name in names:
            metric = METRICS[name]
            tolerance, reason = tolerance_for(self.settings, name, case.model.id, case.backend.name, random_weights)
            if metric.kind != "set":
                check = self._prompt_check(metric, tolerance, reason, cand, ref, notes, strict, random_weights)
            else:
                if name in ("fid", "kid"):  # distances to the reference set: the reference's own is 0
                    function = fid if name == "fid" else kid_function(self.settings)
                    result = None if cand is ref else attempt(lambda: function(cand.features, ref.features,
                                                                                 what="vs reference images"))
                    set_results[name] = result
                    mine, theirs = (0.0 if result is None else result), 0.0
                else:
                    mine, theirs = cand.own.get(name), ref.own.get(name)
                check = self._set_check(metric, tolerance, reason, mine, theirs, notes, strict)
            checks.append(check)
        return checks, notes, set_results

    def _prompt_check(self, metric: Metric, tolerance, reason, cand: Measured, ref: Measured, notes,
                      strict: bool, random_weights: bool) -> Check:
        from accelgate.metrics.stats import delta_gate, mean_with_ci, paired_noninferiority

        c = cand.values[metric.name]
        # LPIPS/SSIM are measured against the reference image: the reference's own value is exact
        r = ref.values[metric.name] if metric.kind == "prompt" else np.full(len(c), ref.values[metric.name][0])
        confidence, resamples = self.settings["confidence"], self.settings["bootstrap_resamples"]
        if tolerance is None:
            mean, low, high = mean_with_ci(c, confidence, resamples)
            return Check(metric.name, mean, None, metric.higher_is_better, ci=None if low is None else (low, high),
                         note=f"mean over {len(c)} prompts, vs the reference images; gated per image (-m quality)")
        ni = paired_noninferiority(c, r, metric.higher_is_better, tolerance, confidence, resamples, metric=metric.name)
        delta = delta_gate(float(c.mean()), float(r.mean()), metric.higher_is_better, tolerance, metric.name)
        passes = ni.verdict == "pass" or (ni.verdict == "inconclusive" and delta.passed and not strict)
        threshold = -tolerance if metric.higher_is_better else tolerance
        ci = None if ni.ci_low is None else (ni.ci_low, ni.ci_high)
        value = ni.mean_delta
        if ci is not None and Check(metric.name, value, threshold, metric.higher_is_better).passed != passes:
            value = ci[0] if metric.higher_is_better else ci[1]  # gated on the interval's worst end
        note = (f"Δ vs reference ({ni.mean_candidate:.4g} vs {ni.mean_reference:.4g}); "
                f"non-inferiority {ni.verdict} ({ni.method}, n={ni.n})")
        if ni.verdict == "inconclusive":
            why = ni.explanation.split("-> inconclusive", 1)[-1].lstrip(": ")
            note += f": {why}"
            if passes:
                strict_note = "" if random_weights else " (--strict-metrics fails it)"
                notes.append(f"{metric.name}: inconclusive, passed on the mean delta {ni.mean_delta:+.4g} within "
                             f"{tolerance:g}; {why}{strict_note}")
            elif delta.passed:
                note += "; --strict-metrics: an inconclusive gate fails (value shown: the CI's worst end)"
        if not passes:
            sign = 1 if metric.higher_is_better else -1
            worst = np.argsort(sign * (c - r))[:3]
            note += "; worst prompts: " + ", ".join(f"{cand.items[i].label()[:40]!r} ({c[i] - r[i]:+.3g})"
                                                    for i in worst)
        return Check(metric.name, value, threshold, metric.higher_is_better, reason, ci, note)

    def _set_check(self, metric: Metric, tolerance, reason, mine, theirs, notes, strict: bool) -> Check:
        from accelgate.metrics.stats import delta_gate

        threshold = None if tolerance is None else (-tolerance if metric.higher_is_better else tolerance)
        lacking = [x for x in (mine, theirs) if x is None or isinstance(x, Exception)]
        if lacking:
            why = "; ".join(dict.fromkeys(str(x) for x in lacking if x is not None)) or "not measured"
            if not strict:
                notes.append(f"{metric.name}: not computed: {why}")
            flag = " (--strict-metrics: a failure)" if strict else ""
            return Check(metric.name, float("nan"), threshold if strict else None, metric.higher_is_better,
                         reason, note=f"not computed: {why}{flag}")
        a, b = (x if isinstance(x, float) else x.value for x in (mine, theirs))
        distance = metric.name in ("fid", "kid")  # already a distance to the reference set
        note = "distance to the reference set" if distance else f"Δ vs reference ({a:.4g} vs {b:.4g})"
        detail = getattr(mine, "note", "") or getattr(theirs, "note", "")
        note += f"; {detail}" if detail else ""
        if tolerance is None:
            return Check(metric.name, a - b, None, metric.higher_is_better, reason, note=note)
        delta = delta_gate(a, b, metric.higher_is_better, tolerance, metric.name)  # refuses non-finite values
        return Check(metric.name, delta.delta, threshold, metric.higher_is_better, reason, note=note)

