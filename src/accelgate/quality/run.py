"""The per-image gate of one run: a case's images against its stored baseline, usable without pytest.

load (a fresh copy, `Session.load`) -> baseline read + staleness -> apply backend -> generate
-> degenerate guard -> pairwise metrics -> judge -> artifacts. Anything a backend or
pipeline raises becomes that case's verdict (`session.verdict_for_exception`), never a crash
of the run.
"""
from __future__ import annotations

import os
import shlex
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from accelgate.backends.torch_backends import denoiser_of
from accelgate.config.schema import format_resolution
from accelgate.generate import Generation, generate, generation_settings, prompt_items
from accelgate.matrix import Case
from accelgate.metrics.catalog import PER_IMAGE
from accelgate.metrics.pairwise import compare_images, diff_heatmap
from accelgate.quality.baselines import BaselineError, BaselineStore, build_manifest, stale_fields, write_png
from accelgate.quality.lifecycle import change_line, find_orphans, regen_change
from accelgate.selftest import damage_verdict, is_damage
from accelgate.session import Session, verdict_for_exception
from accelgate.skipped_work import WorkCounter, no_op_reason, skipped_work_check
from accelgate.state_check import leak_reason, state_leak_check, wants_state_check
from accelgate.verdict import Check, ImageRecord, Verdict, judge, problem


class QualityRun:
    """The per-image gate's state for one run: baseline store, results, artifacts."""

    def __init__(self, session: Session, baseline_dir: Path | None = None, report_dir: Path | None = None,
                 regen: str | bool | None = None, command_options: tuple[str, ...] | None = None, selftest: bool = False,
                 strict_apply: bool = False):
        self.session = session
        self.config = session.config
        self.baseline_dir = Path(baseline_dir) if baseline_dir else self.config.baseline_dir
        self.report_dir = Path(report_dir) if report_dir else None
        self.regen = "all" if regen is True else (regen or None)  # None, "all" or "missing"
        self.selftest = selftest  # damage cases are judged the other way round (accelgate.selftest)
        self.strict_apply = strict_apply  # a "did it apply?" finding fails the case (--accelgate-strict-apply)
        self.command_options = command_options if command_options is not None else self._own_options()
        self.results: list[Verdict] = []
        self.stale_models: dict[str, str] = {}
        self.written_baselines: list[Path] = []
        self.regen_changes: list[dict[str, Any]] = []  # per regen case: new / unchanged / changed / current
        self.pruned: list | None = None  # the orphans --prune-baselines removed (accelgate.quality.lifecycle)
        self._store: BaselineStore | None = None
        self._scratch: Path | None = None

    @property
    def store(self) -> BaselineStore:
        """Baselines of this device class (known once the device is: no torch import before)."""
        if self._store is None:
            from accelgate.machine import device_class

            self._store = BaselineStore(self.baseline_dir, device_class(self.session.device), self.regen_command)
        return self._store

    @property
    def progress(self):
        """The terminal's per-step progress (accelgate.progress), when the session has one."""
        return getattr(self.session, "progress", None)

    # -- the flow -------------------------------------------------------------------------
    def evaluate(self, case: Case) -> Verdict:
        reason = self.session.skip_reason(case)
        if reason:
            verdict = problem(case, "skipped", reason)
        elif getattr(self.session, "isolate", False):  # a test double of the session may not say
            verdict = self._evaluate_isolated(case)
        else:
            try:
                verdict = self._evaluate(case)
            except (Exception, SystemExit) as error:  # a backend or pipeline failure is this case's verdict
                verdict = verdict_for_exception(case, error, device=self.session.device)
            finally:
                self.session.cleanup()
        if self.selftest and is_damage(case.backend.name):
            verdict = damage_verdict(verdict)
        # the results keep no live exception: its frames hold the case's pipeline
        self.results.append(replace(verdict, error=None) if verdict.error is not None else verdict)
        return verdict

    def _evaluate_isolated(self, case: Case) -> Verdict:
        kwargs = {"baseline_dir": str(self.baseline_dir), "report_dir": str(self.report_dir) if self.report_dir else None,
                  "regen": self.regen, "command_options": self.command_options, "strict_apply": self.strict_apply}
        try:
            verdict, stale, written, hashes, changes = self.session.run_isolated(
                case, "accelgate.quality.run:isolated_case", **kwargs)
        except Exception as error:  # the child timed out, died, or could not start the case
            return verdict_for_exception(case, error, device=self.session.device)
        self.stale_models.update(stale)
        self.written_baselines += [Path(p) for p in written]
        self.regen_changes += changes
        for model, digest in hashes.items():
            self.session.model_hashes.setdefault(model, digest)
        return verdict

    def _own_options(self) -> tuple[str, ...]:
        """Without the plugin: the options that point a rerun at this config and baseline directory."""
        options = []
        if self.config.source and self.config.source != self.config.root / "pyproject.toml":
            options.append(f"--accelgate-config={self.config.source}")
        if self.baseline_dir != self.config.baseline_dir:
            options.append(f"--baseline-dir={self.baseline_dir}")
        return tuple(options)

    def regen_command(self, case_id: str) -> str:
        """The exact command that rewrites one case's baseline, in the directory it was made in:
        the config, --baseline-dir and --device of this run, quoted for the shell, written
        `--option=value` (a bare path after a plugin option can move pytest's rootdir)."""
        model, _, resolution = case_id.split("/")
        ref_id = f"{model}/{self.config.reference}/{resolution}"
        return shlex.join(["pytest", "-m", "quality", "--regen-baselines", "-k", ref_id, *self.command_options])

    def _evaluate(self, case: Case) -> Verdict:
        items = prompt_items(case.model)
        settings = generation_settings(case.model)
        resolution = format_resolution(case.resolution)
        pipe = self.session.load(case)
        model_hash = self.session.model_hash(case.model)
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
        generation, extra = self._generate_checked(case, case.backend.apply_to(pipe), items)
        return self._compare(case, generation, baseline, extra)

    def _generate_checked(self, case: Case, pipe, items) -> tuple[Generation, list[tuple[Check, str]]]:
        """The case's images, and the checks of what its calls showed beyond the images, each with
        the reason it gives when it fails: a cache that skipped no work (accelgate.skipped_work),
        state carried from one call into the next (accelgate.state_check)."""
        extra = []
        if case.backend.skips_work:
            with WorkCounter(denoiser_of(pipe)[1]) as counter:
                generation = generate(pipe, case, items, progress=self.progress)
            work = counter.result()
            extra.append((skipped_work_check(work), no_op_reason(case.backend.name, work)))
        else:
            generation = generate(pipe, case, items, progress=self.progress)
        if wants_state_check(case) and not (self.selftest and is_damage(case.backend.name)):
            leak = state_leak_check(pipe, case, generation.images[0])
            extra.append((leak, leak_reason(case.backend.name, leak, case)))
        return generation, extra

    def _write_baseline(self, case, pipe, items, settings, model_hash) -> Verdict:
        resolution = format_resolution(case.resolution)
        try:
            previous = self.store.read(case.id, case.model.id, resolution)
        except BaselineError:  # missing or unreadable: this regen writes a new one
            previous = None
        if self.regen == "missing" and previous is not None:
            expected = [{"prompt": i.label(), "seed": case.model.seed + n} for n, i in enumerate(items)]
            if not stale_fields(previous, settings, expected, model_hash):
                self.regen_changes.append({"id": case.id, "change": "current", "images": len(previous.images)})
                return problem(case, "passed", f"baseline current, kept (--regen-baselines=missing): {previous.directory}")
        generation = generate(pipe, case, items, progress=self.progress)
        records = [{"prompt": i.label(), "seed": s, "float_sha256": f}
                   for i, s, f in zip(generation.items, generation.seeds, generation.float_sha256)]
        manifest = build_manifest(case, settings, model_hash, records, self.store.device_class)
        path = self.store.write(case.model.id, resolution, manifest, generation.images)
        self.written_baselines.append(path)
        change = regen_change(case.id, previous, generation.images)
        self.regen_changes.append(change)
        return problem(case, "passed", f"baseline written to {path}; {change_line(change)}",
                       timing={"generate_s": generation.seconds})

    # -- comparison and artifacts ---------------------------------------------------------
    def _compare(self, case: Case, generation: Generation, baseline, extra: list[tuple[Check, str]] = ()) -> Verdict:
        records, per_metric = [], {name: [] for name in PER_IMAGE}
        for index, (image, reference) in enumerate(zip(generation.images, baseline.images)):
            values = compare_images(image, reference)
            for name, value in values.items():
                per_metric[name].append(value)
            records.append(ImageRecord(generation.items[index].label(), generation.seeds[index], metrics=values))
        checks = []
        for name, metric in PER_IMAGE.items():
            values = per_metric[name]
            worst = min(values) if metric.higher_is_better else max(values)
            tolerance = self.config.tolerance(name, case.model.id, case.backend.name)
            checks.append(Check(name, worst, tolerance.threshold, metric.higher_is_better, tolerance.reason,
                                note=f"worst of {len(values)} image(s)" if len(values) > 1 else ""))
        verdict = judge(case, checks, records, {"generate_s": generation.seconds})
        self._did_it_apply(case, generation, baseline, verdict)
        for check, why in extra:  # what the call itself showed: a cache that never fired, leaked state
            verdict.checks.append(check)
            if not check.passed:
                verdict.fail(why)
        if self.report_dir is not None or not verdict.passed:
            try:
                self._write_artifacts(case, verdict, generation, baseline)
            except OSError as error:  # a full or unwritable disk must not turn this verdict into an error
                note = f"candidate/baseline/diff images not written ({error.strerror or error}: {error.filename})"
                verdict.add_reason(note)
        return verdict

    def _did_it_apply(self, case: Case, generation: Generation, baseline, verdict: Verdict) -> None:
        """A backend that declares it changes the numerics but whose float images equal the
        reference's bit for bit (the baseline's fingerprints, made on this device class) did not
        apply: a silent fallback. A finding (a warning), a failure under --accelgate-strict-apply.
        Silent when the baseline has no fingerprints (made before they were stored) or when the
        reference's floats differ on this machine: only equality is evidence."""
        stored = [entry.get("float_sha256") for entry in baseline.manifest.get("images", [])]
        if (case.reference or not case.backend.changes_numerics or not all(stored)
                or stored != generation.float_sha256):
            return
        finding = (f"did it apply? {case.backend.name} declares it changes the numerics, but its float images "
                   f"(before 8-bit rounding) equal the reference's bit for bit ({len(stored)} of {len(stored)}): it "
                   "probably fell back to the reference path (a compile that failed over to eager, a cast or "
                   "quantization that skipped every layer, a cache that never fired)")
        verdict.findings.append(finding)
        if self.strict_apply:
            verdict.fail(finding)

    def artifacts_root(self) -> Path:
        if self.report_dir is not None:
            return self.report_dir
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="accelgate-failures-"))
            umask = os.umask(0)
            os.umask(umask)
            self._scratch.chmod(0o777 & ~umask)  # readable like any folder, not mkdtemp's 0700
        return self._scratch

    def _write_artifacts(self, case: Case, verdict: Verdict, generation: Generation, baseline) -> None:
        root = self.artifacts_root()
        verdict.image_root = str(root)
        folder = Path("images") / case.model.id / case.backend.name / format_resolution(case.resolution)
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index, record in enumerate(verdict.images):
            paths = {kind: folder / f"{index:02d}-{kind}.png" for kind in ("candidate", "baseline", "diff")}
            write_png(root / paths["candidate"], generation.images[index])
            write_png(root / paths["baseline"], baseline.images[index])
            write_png(root / paths["diff"], diff_heatmap(generation.images[index], baseline.images[index]))
            relative = self.report_dir is not None
            for kind, path in paths.items():
                setattr(record, kind, str(path) if relative else str(root / path))

    def record_missing(self, case: Case, outcome: str, reason: str) -> None:
        """A case that ended without a verdict (a fixture error, an interrupt, the victim check)
        is still a row of the report; the first verdict of a case is the one that counts."""
        if not any(v.case_id == case.id for v in self.results):
            self.results.append(problem(case, outcome, reason))

    # -- the report's part ----------------------------------------------------------------
    def report_part(self) -> dict[str, Any]:
        """This gate's part of results.json (top-level keys: the published interface)."""
        matrix = self.session.matrix
        return {
            "cases": [v.as_json() for v in self.results],
            "not_applicable": [
                {"id": f"{n.model}/{n.backend}/{format_resolution(n.resolution)}", "model": n.model,
                 "backend": n.backend, "resolution": list(n.resolution), "reason": n.reason}
                for n in matrix.not_applicable
            ] if self.results else [],
            "model_hashes": {k: v for k, v in self.session.model_hashes.items()
                             if any(r.model == k for r in self.results)},
            "stale_models": dict(self.stale_models),
            "written_baselines": [str(p) for p in self.written_baselines],
            "regen_changes": list(self.regen_changes),
            "orphaned_baselines": [o.as_json() for o in find_orphans(self.baseline_dir, self.config)],
            "pruned_baselines": [o.as_json() for o in self.pruned or []],
            "backend_order": [c.spec.name for c in self.config.backends],
        }


def isolated_case(session: Session, case: Case, *, baseline_dir: str, report_dir: str | None, regen: str | None,
                  command_options: tuple[str, ...], strict_apply: bool = False) -> tuple:
    """`--accelgate-isolate`'s runner (in the child process): the case's verdict, and what the
    parent's report needs from this run (stale models, written baselines, model hashes)."""
    run = QualityRun(session, Path(baseline_dir), Path(report_dir) if report_dir else None, regen, command_options,
                     strict_apply=strict_apply)
    verdict = run.evaluate(case)
    return (verdict, run.stale_models, [str(p) for p in run.written_baselines], dict(session.model_hashes),
            run.regen_changes)
