"""The one compare-and-judge function every kind of check goes through.

A `Check` is one metric against one threshold with a direction; `judge` turns a list of
them into a `Verdict` whose message lists every metric with value, threshold and
direction, says which failed, and points at the images. Per-image gates and distribution
gates both end here, so a report row always reads the same way.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OUTCOMES = ("passed", "failed", "error", "skipped", "oom")  # oom: out of memory, with the peak and the resolution


def count_outcomes(verdicts) -> dict[str, int]:
    """How many verdicts (or their results.json dicts) have each outcome: the one count every
    summary line and report uses."""
    counts: dict[str, int] = {}
    for verdict in verdicts:
        outcome = verdict["outcome"] if isinstance(verdict, dict) else verdict.outcome
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


@dataclass(frozen=True)
class Check:
    metric: str
    value: float
    threshold: float | None
    higher_is_better: bool
    reason: str = ""  # why the threshold was loosened, when it was
    ci: tuple[float, float] | None = None  # a confidence interval, for distribution checks
    note: str = ""

    @property
    def op(self) -> str:
        if self.threshold is None:
            return "info"
        return ">=" if self.higher_is_better else "<="

    @property
    def passed(self) -> bool:
        if self.threshold is None:
            return True
        if math.isnan(self.value):
            return False
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    def line(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        value = fmt_value(self.value)
        if self.ci is not None:
            value += f" (95% CI {fmt_value(self.ci[0])}..{fmt_value(self.ci[1])})"
        if self.threshold is None:
            return f"  {self.metric:<12} {value:<14} (reported, not gated; {direction})"
        mark = "ok  " if self.passed else "FAIL"
        text = f"  {mark} {self.metric:<12} {value:<14} {self.op} {fmt_value(self.threshold)}  ({direction})"
        if self.reason:
            text += f"  [loosened: {self.reason}]"
        if self.note:
            text += f"  {self.note}"
        return text

    def as_json(self) -> dict[str, Any]:
        data = {"value": json_number(self.value), "threshold": self.threshold, "op": self.op, "passed": self.passed}
        if self.reason:
            data["loosened_because"] = self.reason
        if self.ci is not None:
            data["ci"] = [json_number(v) for v in self.ci]
        if self.note:
            data["note"] = self.note
        return data


def fmt_value(value: float) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and abs(value) < 0.01:
        return f"{value:.3g}"  # tiny tolerances (LPIPS, FID of random features) stay readable
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def shown_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """A path to print on a terminal: relative to the current directory when the file lies
    under it (so it opens from where pytest was started), absolute otherwise (a temporary
    directory), never a chain of '../'."""
    full = Path(root or "", path).resolve()
    try:
        return str(full.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(full)


def json_number(value: float) -> float | str:
    """JSON has no infinity: identical images have PSNR 'inf', written as the string."""
    if value is None or math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return round(value, 6)


@dataclass
class ImageRecord:
    prompt: str
    seed: int
    candidate: str = ""
    baseline: str = ""
    diff: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = {k: json_number(v) for k, v in self.metrics.items()}
        return data


@dataclass
class Verdict:
    case_id: str
    model: str
    backend: str
    resolution: tuple[int, int]
    outcome: str
    reason: str = ""
    checks: list[Check] = field(default_factory=list)
    images: list[ImageRecord] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    reference: bool = False
    kind: str = "pairwise"
    findings: list[str] = field(default_factory=list)  # what needs a look though the case passed ("did it apply?")
    # not in results.json: the live exception of an "error" case (so the pytest side can re-raise
    # it with the backend's own traceback), and where the image paths are relative to
    error: BaseException | None = field(default=None, repr=False, compare=False)
    image_root: str = field(default="", repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def message(self) -> str:
        """The readable report of the case, for an assertion message: the outcome and reason,
        the metric table (one line per check: value, threshold, direction), and the three images
        of the worst image (paths that open from the current directory). Every other image is in
        the report; a message longer than this is read by nobody."""
        title = f"{self.case_id}: {self.outcome.upper()}"
        if self.reason:
            title += f" - {self.reason}"
        lines = [title] + [check.line() for check in self.checks] + [f"  finding: {f}" for f in self.findings]
        worst = self.worst_image()
        if worst is not None:
            count = sum(1 for i in self.images if i.diff)
            lines.append(f"  worst image {worst.prompt[:50]!r} (seed {worst.seed})"
                         + (f", 1 of {count}; all in the report:" if count > 1 else ":"))
            lines += [f"    {kind:<9} {shown_path(getattr(worst, kind), self.image_root)}"
                      for kind in ("candidate", "baseline", "diff")]
        return "\n".join(lines)

    def add_reason(self, text: str) -> None:
        """A further cause or note after the reason there is, `; `-separated."""
        self.reason = f"{self.reason}; {text}" if self.reason else text

    def fail(self, why: str) -> None:
        """The case fails for `why` too (a check beyond the metrics, a strict finding)."""
        self.outcome = "failed"
        self.add_reason(why)

    def worst_image(self) -> ImageRecord | None:
        """The image with the worst value of the first failing check (of the first check when
        none failed), among those whose candidate/baseline/diff files were written."""
        written = [i for i in self.images if i.diff]
        if not written:
            return None
        check = next((c for c in self.checks if not c.passed), self.checks[0] if self.checks else None)
        if check is None or not all(check.metric in i.metrics for i in written):
            return written[0]
        pick = min if check.higher_is_better else max
        return pick(written, key=lambda i: i.metrics[check.metric])

    def __repr__(self) -> str:
        """One line: pytest prints it under a failed `assert verdict.passed` (after the message),
        so the dataclass's every-field repr would repeat the report as a wall of text."""
        reason = self.reason.splitlines()[0] if self.reason else ""
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        return (f"Verdict({self.case_id!r}, {self.outcome}" + (f": {reason}" if reason else "")
                + f"; {len(self.checks)} check(s), {len(self.images)} image(s))")

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.case_id,
            "model": self.model,
            "backend": self.backend,
            "resolution": list(self.resolution),
            "reference": self.reference,
            "kind": self.kind,
            "outcome": self.outcome,
            "reason": self.reason,
            "metrics": {c.metric: c.as_json() for c in self.checks},
            "images": [i.as_json() for i in self.images],
            "worst_image": self.images.index(worst) if (worst := self.worst_image()) is not None else None,
            "timing": {k: round(v, 4) for k, v in self.timing.items()},
            "findings": list(self.findings),
        }


def judge(case, checks: list[Check], images: list[ImageRecord] | None = None,
          timing: dict[str, float] | None = None, kind: str = "pairwise") -> Verdict:
    """Turn checks into a verdict; the eager-vs-baseline case is named the reference drift check."""
    failed = [c for c in checks if not c.passed]
    if not failed:
        outcome, reason = "passed", ""
    else:
        names = ", ".join(f"{c.metric} {fmt_value(c.value)} {'<' if c.higher_is_better else '>'} {fmt_value(c.threshold)}"
                          for c in failed)
        outcome = "failed"
        if case.reference:
            reason = (f"reference drift: the reference backend no longer reproduces its stored baseline ({names}). "
                      "torch/diffusers, the hardware or the thread count changed, or the baseline is stale; every "
                      f"backend verdict for {case.model.id} is unreliable until this is understood")
        else:
            reason = f"quality dropped vs the baseline: {names}"
    return Verdict(case.id, case.model.id, case.backend.name, case.resolution, outcome, reason, checks,
                   images or [], timing or {}, case.reference, kind)


def problem(case, outcome: str, reason: str, timing: dict[str, float] | None = None) -> Verdict:
    """A verdict with no metrics: an error, a skip, a stale or degenerate result."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r} not in {OUTCOMES}")
    return Verdict(case.id, case.model.id, case.backend.name, case.resolution, outcome, reason,
                   timing=timing or {}, reference=case.reference)
