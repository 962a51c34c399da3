"""Gates on distributions: a tolerance on the delta, and a paired non-inferiority test over prompts.

The question for a lossy backend is not "is the mean score different" (with enough prompts
everything is) but "is it worse by more than we accept". Scores are paired: the candidate
and the reference backend render the same prompt with the same seed, so the per-prompt
difference d_i removes the prompt's own difficulty, which dominates the variance.

`paired_noninferiority` bootstraps the mean of d_i (scipy.stats.bootstrap, paired=True,
BCa by default) and compares the *worst plausible* end of the interval with the margin:
higher-is-better metrics pass when the lower bound is >= -margin, lower-is-better ones when
the upper bound is <= +margin, so an improvement never fails. The interval is two-sided at
`confidence` (reported as value +/- CI); its gating end is therefore a one-sided bound at
(1 + confidence) / 2, the usual non-inferiority convention (95% two-sided -> alpha 0.025).

Three verdicts, because "not shown to be fine" is not "shown to be worse":
  pass          the whole interval is on the acceptable side of the margin;
  fail          the whole interval is beyond the margin: a drop larger than the margin is
                demonstrated, not just observed;
  inconclusive  the interval straddles the margin: too few prompts or too much spread to
                tell. `passed` and `failed` are both False; the explanation says which side
                the mean is on and roughly how many prompts would settle it. The plugin
                decides what an inconclusive gate does (e.g. a failure under --strict-metrics).
So a handful of prompts can neither fail a good backend on one unlucky prompt (false alarm)
nor pass a real drop (its interval is wide, so it is at best inconclusive, and reported).

Small samples: below `min_bootstrap_n` (10) prompts a bootstrap interval is far too narrow
(with 2 prompts it spans just the two differences), which would let a handful of prompts
pass; there the interval is Student's t on the differences instead, and the method says so.

Degenerate inputs: n == 0 is an error; n == 1 has no interval, the verdict is the point
difference against the margin and says so; identical differences (e.g. the reference
against itself) have zero spread, the interval is that point, exactly.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NonInferiorityResult:
    metric: str
    n: int
    mean_candidate: float
    mean_reference: float
    mean_delta: float  # candidate - reference, in the metric's units
    ci_low: float | None  # interval of mean_delta; None when n < 2
    ci_high: float | None
    confidence: float
    margin: float
    higher_is_better: bool
    verdict: str  # "pass" | "fail" | "inconclusive"
    method: str
    explanation: str

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    def describe(self) -> str:
        return self.explanation


@dataclass(frozen=True)
class DeltaResult:
    metric: str
    candidate: float
    reference: float
    delta: float  # candidate - reference
    allowed: float  # the worst delta accepted, signed (negative for higher-is-better)
    higher_is_better: bool
    passed: bool
    explanation: str


def _clean(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name}: non-finite values at indices {bad[:10].tolist()} of {arr.size}")
    return arr


def _fmt(x: float) -> str:
    return f"{x:+.4g}"


def paired_noninferiority(candidate, reference, higher_is_better: bool, margin: float, confidence: float = 0.95,
                          n_resamples: int = 9999, seed: int = 0, metric: str = "metric",
                          method: str = "BCa", min_bootstrap_n: int = 10) -> NonInferiorityResult:
    """Is the candidate no worse than the reference by more than `margin`, over paired prompts?"""
    from scipy.stats import bootstrap

    cand, ref = _clean(candidate, f"{metric} candidate"), _clean(reference, f"{metric} reference")
    if cand.shape != ref.shape:
        raise ValueError(f"{metric}: {cand.size} candidate vs {ref.size} reference values; the test is paired, "
                         "one value per prompt and seed for each backend")
    if cand.size == 0:
        raise ValueError(f"{metric}: no values to compare")
    if margin < 0 or not 0 < confidence < 1:
        raise ValueError(f"{metric}: margin must be >= 0 and confidence in (0, 1); got {margin}, {confidence}")
    d = cand - ref
    n, mean = d.size, float(d.mean())
    sign = 1.0 if higher_is_better else -1.0  # sign * delta > 0 is an improvement
    direction = "higher is better" if higher_is_better else "lower is better"
    head = (f"{metric}: candidate {cand.mean():.4g} vs reference {ref.mean():.4g}, delta {_fmt(mean)}")
    tail = f"margin {margin:.4g} ({direction}), n={n}"
    mean_ok = sign * mean >= -margin

    if n < 2:
        verdict = "pass" if mean_ok else "fail"
        text = f"{head} (1 prompt: no interval, judged on the point difference alone), {tail} -> {verdict}"
        return NonInferiorityResult(metric, n, float(cand.mean()), float(ref.mean()), mean, None, None,
                                    confidence, margin, higher_is_better, verdict, "point (n=1)", text)
    if np.ptp(d) == 0:
        verdict = "pass" if mean_ok else "fail"
        text = (f"{head} [identical on all {n} prompts: zero spread, the interval is the point], {tail} -> {verdict}")
        return NonInferiorityResult(metric, n, float(cand.mean()), float(ref.mean()), mean, mean, mean,
                                    confidence, margin, higher_is_better, verdict, "exact (zero variance)", text)

    if n < min_bootstrap_n:
        low, high = _student_t(d, confidence)
        used = f"Student t (n<{min_bootstrap_n})"
    else:
        used = f"bootstrap {method}"
        low, high = _bootstrap(bootstrap, cand, ref, confidence, n_resamples, seed, method)
    if not (np.isfinite(low) and np.isfinite(high)) and method != "percentile":
        used = "bootstrap percentile"  # BCa is undefined on some lumpy samples
        low, high = _bootstrap(bootstrap, cand, ref, confidence, n_resamples, seed, "percentile")
    worst, best = (low, high) if higher_is_better else (high, low)
    if sign * worst >= -margin:
        verdict = "pass"
    elif sign * best < -margin:
        verdict = "fail"
    else:
        verdict = "inconclusive"
    pct = f"{confidence:.0%}"
    text = f"{head} [{pct} CI {_fmt(low)}, {_fmt(high)}; {used}], {tail} -> {verdict}"
    if verdict == "inconclusive":
        half = (high - low) / 2
        room = abs(sign * mean + margin)  # distance from the mean to the margin
        need = int(np.ceil(n * (half / room) ** 2)) if room > 0 else None
        side = "within" if mean_ok else "beyond"
        text += (f": the mean is {side} the margin but the interval crosses it"
                 + (f"; about {need} prompts would settle it" if need else ""))
    return NonInferiorityResult(metric, n, float(cand.mean()), float(ref.mean()), mean, float(low), float(high),
                                confidence, margin, higher_is_better, verdict, used, text)


def _student_t(values: np.ndarray, confidence: float) -> tuple[float, float]:
    from scipy.stats import t as student_t

    half = float(student_t.ppf((1 + confidence) / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return float(values.mean()) - half, float(values.mean()) + half


def _bootstrap(bootstrap, cand, ref, confidence, n_resamples, seed, method) -> tuple[float, float]:
    def mean_difference(c, r, axis=-1):
        return np.mean(c - r, axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning: handled by the NaN check
        result = bootstrap((cand, ref), mean_difference, paired=True, vectorized=True, n_resamples=n_resamples,
                           confidence_level=confidence, method=method, rng=np.random.default_rng(seed),
                           batch=max(1, min(n_resamples, 2_000_000 // max(1, cand.size))))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_with_ci(values, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0, method: str = "BCa",
                 min_bootstrap_n: int = 10) -> tuple[float, float | None, float | None]:
    """A backend's mean score with a bootstrap interval (Student t below `min_bootstrap_n`), for reports."""
    from scipy.stats import bootstrap

    arr = _clean(values, "values")
    if arr.size == 0:
        raise ValueError("mean_with_ci: no values")
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, None, None
    if np.ptp(arr) == 0:
        return mean, mean, mean
    if arr.size < min_bootstrap_n:
        return (mean, *_student_t(arr, confidence))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = bootstrap((arr,), np.mean, vectorized=True, n_resamples=n_resamples, confidence_level=confidence,
                       method=method, rng=np.random.default_rng(seed)).confidence_interval
    low, high = float(ci.low), float(ci.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        if method != "percentile":
            return mean_with_ci(values, confidence, n_resamples, seed, "percentile", min_bootstrap_n)
        return mean, None, None
    return mean, low, high


def delta_gate(candidate: float, reference: float, higher_is_better: bool, tolerance: float,
               metric: str = "metric", relative: bool = False) -> DeltaResult:
    """The plain tolerance check on one number per backend (set metrics: FID, KID, IS; or means).

    `tolerance` is in metric units, or a fraction of |reference| when `relative`. Direction-aware:
    a change in the good direction always passes.
    """
    if not (np.isfinite(candidate) and np.isfinite(reference)):
        raise ValueError(f"{metric}: non-finite value (candidate {candidate}, reference {reference})")
    if tolerance < 0:
        raise ValueError(f"{metric}: tolerance must be >= 0, got {tolerance}")
    allowed_size = tolerance * abs(reference) if relative else tolerance
    delta = float(candidate - reference)
    sign = 1.0 if higher_is_better else -1.0
    passed = sign * delta >= -allowed_size
    direction = "higher is better" if higher_is_better else "lower is better"
    what = f"{tolerance:.0%} of reference = {allowed_size:.4g}" if relative else f"{allowed_size:.4g}"
    text = (f"{metric}: candidate {candidate:.4g} vs reference {reference:.4g}, delta {_fmt(delta)}, "
            f"tolerance {what} ({direction}) -> {'pass' if passed else 'fail'}")
    return DeltaResult(metric, float(candidate), float(reference), delta, -sign * allowed_size, higher_is_better,
                       passed, text)
