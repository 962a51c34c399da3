"""Speed, memory, warmup and recompiles of one case, measured the same way on every backend.

The seeds measure once, with a wall clock and no CUDA sync, and read memory through a
different API per backend; their "warmup" mixes compile and cache. Here one case is:

1. **cold warmup**: a fresh compile cache directory, in-process compiler state reset, a
   freshly loaded pipeline with the backend applied, its first call (compile included);
2. **warm-cache warmup**, only when step 1 compiled something: the same again with the
   cache directory kept (what a restarted server pays); for a backend that compiles
   nothing, cold = warm = that first call, measured once (a second load would only
   re-measure noise and cost time);
3. **steady state**: pytest-benchmark's `pedantic` calls `target` for the configured warmup
   rounds and rounds, one generation each (first prompt of the model's set, fixed seed),
   timed with a synchronized wall clock, it/s from `callback_on_step_end` (steps 2..N) and
   peak memory through one probe (`accelgate.speed.timing`);
4. **shape switch**, for a compiling backend whose other resolution was measured earlier in
   the session: the compiled pipeline is called once at that resolution (warm cache, no
   reset) so a backend that recompiles on every new shape shows it.

Recompiles (dynamo compilations of an already compiled frame) are counted from the warm
first call to the end of step 4 and summed over the (model, backend)'s resolutions in the
session; more than the backend's budget fails. The speed-up floor is checked against the
reference backend (eager) measured in the same session, never against a stored number: a
floor that compares across days compares machines. This module has no pytest import.
"""
from __future__ import annotations

import statistics
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from accelgate.config.speed import DEFAULTS, floor_for
from accelgate.session import Session
from accelgate.speed.compile_tracking import CompileCache, RecompileCounter, split_compile_id
from accelgate.speed.case import CaseMeasurement, call_kwargs, generate_once
from accelgate.speed.timing import time_call

@dataclass
class SpeedVerdict:
    case_id: str
    problems: list[str]
    extra_info: dict[str, Any]

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def message(self) -> str:
        return f"{self.case_id}: " + "\n".join(self.problems) if self.problems else f"{self.case_id}: passed"

    def __repr__(self) -> str:
        """One line (pytest prints it under a failed `assert verdict.passed`), not extra_info's every number."""
        return f"SpeedVerdict({self.case_id!r}, {'passed' if self.passed else f'{len(self.problems)} problem(s)'})"


@dataclass
class _Pair:
    """What the session knows about one (model, backend) across its resolutions."""

    compiled: bool = False
    frames: int = 0  # frames compiled by a first call: one graph each per resolution
    switches: int = 0  # shape switches done (step 4)
    recompiles: int = 0
    per_resolution: dict[str, int] = field(default_factory=dict)
    last: tuple[tuple[int, int], CompileCache] | None = None  # resolution and cache of the latest case


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class SpeedSession:
    """The speed run of one pytest session: settings, per-pair recompile state, the
    reference's medians, and every case's extra_info (for the seed-004 table)."""

    def __init__(self, session: Session, settings: Mapping[str, Any] | None = None):
        self.session = session
        self.config = session.config
        self.device = session.device
        self.settings = {**DEFAULTS, **dict(settings if settings is not None else self.config.speed)}
        self.reference = self.config.reference
        self.results: list[dict[str, Any]] = []
        self._reference_e2e: dict[tuple[str, tuple[int, int]], float] = {}
        self._pairs: dict[tuple[str, str], _Pair] = {}

    # -- what applies to a case ---------------------------------------------------------------
    def skip_reason(self, case) -> str | None:
        return self.session.skip_reason(case)

    def floor_for(self, case) -> tuple[float | None, str]:
        """Most specific wins: a (model, backend) floor, a backend floor, the backend's
        own min_speedup. Returns (floor or None, where it came from)."""
        return floor_for(self.settings["floors"], self.config.backend(case.backend.name).min_speedup,
                         case.model.id, case.backend.name)

    def floors_enabled(self) -> bool:
        return self.device.startswith("cuda") or bool(self.settings["speedup_on_cpu"])

    def free_memory(self) -> None:
        self.session.cleanup()

    # -- steps 1 and 2 ------------------------------------------------------------------------
    def _first_call(self, case) -> tuple[Any, dict[str, float]]:
        """Load, apply, first call; each timed apart (the warmup is the first call). `load_s` is a
        fresh copy of the model the session holds in memory: it is read from disk once per
        session, before any timing, so every case's load_s measures the same thing."""
        self.session.model_hash(case.model)  # the one disk read, untimed
        pipe, load_s = time_call(lambda: self.session.load(case), self.device)
        pipe, apply_s = time_call(lambda: case.backend.apply_to(pipe), self.device)
        kwargs = call_kwargs(pipe, case)
        first_s = time_call(lambda: generate_once(pipe, case, kwargs), self.device)[1]
        return pipe, {"load_s": load_s, "apply_s": apply_s, "first_call_s": first_s}

    def prepare(self, case) -> CaseMeasurement:
        """Steps 1-2: cold and warm-cache warmups; returns the warmed pipeline for step 3."""
        pair = self._pairs.setdefault((case.model.id, case.backend.name), _Pair())
        cache, stack = CompileCache(), ExitStack()
        try:
            with cache.cold(), RecompileCounter() as cold_counter:
                pipe, cold = self._first_call(case)
            compiled = cold_counter.compiles > 0 or bool(cold_counter.as_dict()["other_events"]) or cache.files() > 0
            if compiled:
                pipe = None
                self.free_memory()
                # a compiler that keeps nothing on disk (dynamo with backend="eager") gets a
                # second cold start: there is no cache to keep, and warm() refuses an empty one
                with cache.warm() if cache.files() else cache.cold():
                    counter = stack.enter_context(RecompileCounter())
                    pipe, warm = self._first_call(case)
                first = [split_compile_id(cid) for cid in counter.compile_ids]
                pair.frames = max(pair.frames, len({f[0] for f in first if f and f[1] == 0}))
            else:
                counter, warm = stack.enter_context(RecompileCounter()), cold
        except BaseException:
            stack.close()
            cache.remove()
            raise
        pair.compiled = pair.compiled or compiled
        m = CaseMeasurement(self, case, pipe, cache, counter, stack)
        m.info.update(cold_warmup_s=cold["first_call_s"], warm_warmup_s=warm["first_call_s"],
                      warm_cache_measured=compiled, compiled=compiled, compile_cache_files=cache.files(),
                      load_s=warm["load_s"], apply_s=warm["apply_s"])
        return m

    # -- step 4 and the verdict ---------------------------------------------------------------
    def _switch_shape(self, m: CaseMeasurement, pair: _Pair) -> None:
        """Call the compiled pipeline once at the pair's previous resolution, with that
        case's cache (warm) and no reset, so the counter sees the recompile a new shape costs."""
        from accelgate.config.schema import format_resolution
        from accelgate.models.loading import prepare_resolution

        previous, cache = pair.last
        other = replace(m.case, resolution=previous)
        prepare_resolution(m.pipe, other.model, other.height, other.width, applied=True)
        kwargs = call_kwargs(m.pipe, other)
        with cache.reuse():
            m.info["shape_switch_s"] = time_call(lambda: generate_once(m.pipe, other, kwargs), self.device)[1]
        m.info["shape_switch_from"] = format_resolution(previous)
        pair.switches += 1

    def _budget(self, case, pair: _Pair) -> tuple[int, str]:
        declared = self.config.backend(case.backend.name).recompile_budget
        if declared is not None:
            return declared, f"declared recompile_budget = {declared}"
        if not pair.compiled:
            return 0, "default for a backend that compiles nothing"
        return pair.frames * pair.switches, (f"default, one graph per resolution: {pair.frames} compiled "
                                             f"frame(s) x {pair.switches} resolution switch(es)")

    def reference_e2e(self, case) -> tuple[float | None, bool]:
        """The reference backend's median E2E at the case's model and resolution, from this
        session; measured now (same rounds) when it has not run yet, e.g. under -k."""
        key = (case.model.id, case.resolution)
        if key in self._reference_e2e:
            return self._reference_e2e[key], False
        spec = self.config.backend(self.reference).spec
        m = self.prepare(replace(case, backend=spec, reference=True))
        try:
            for _ in range(self.settings["warmup_rounds"] + self.settings["rounds"]):
                m.target(**m.setup()[1])
        finally:
            m.close()
        self._reference_e2e[key] = _median([s["e2e_s"] for s in m.samples[-self.settings["rounds"]:]])
        return self._reference_e2e[key], True

    def finish(self, m: CaseMeasurement) -> SpeedVerdict:
        """Step 4, then the medians, the recompile budget and the floor, as extra_info."""
        from accelgate.config.schema import format_resolution

        case = m.case
        if len(m.samples) < self.settings["rounds"]:
            raise RuntimeError(f"{case.id}: {len(m.samples)} timed round(s) ran, {self.settings['rounds']} expected: "
                               "the runner must call setup() and target() warmup_rounds + rounds times")
        pair = self._pairs[(case.model.id, case.backend.name)]
        if pair.compiled and pair.last is not None and pair.last[0] != case.resolution:
            self._switch_shape(m, pair)
        m.stack.close()  # stops the recompile counter
        resolution = format_resolution(case.resolution)
        samples = m.samples[-self.settings["rounds"]:]
        counter = m.counter
        pair.recompiles += counter.recompiles
        pair.per_resolution[resolution] = pair.per_resolution.get(resolution, 0) + counter.recompiles
        budget, budget_source = self._budget(case, pair)
        info = {
            "model": case.model.id, "backend": case.backend.name, "resolution": resolution, "device": self.device,
            "steps": samples[0]["steps"], "rounds": len(samples),
            "warmup_rounds": self.settings["warmup_rounds"],
            "it_per_s": _median([s["it_per_s"] for s in samples]),
            "e2e_s": _median([s["e2e_s"] for s in samples]),
            "peak_mem_bytes": _median([s["peak_mem_bytes"] for s in samples]),
            "peak_mem_abs_bytes": _median([s["peak_mem_abs_bytes"] for s in samples]),
            "peak_mem_api": samples[0]["peak_mem_api"], "step_clock": samples[0]["step_clock"],
            "step_source": samples[0]["step_source"],
            **m.info,
            "recompiles": counter.recompiles, "compiles": counter.compiles, "graph_breaks": counter.graph_breaks,
            "recompile_limit_hits": counter.recompile_limit_hits, "compile_ids": list(counter.compile_ids),
            "recompiles_total": pair.recompiles, "recompile_budget": budget, "recompile_budget_source": budget_source,
            "samples": [{k: s[k] for k in ("e2e_s", "it_per_s", "peak_mem_bytes")} for s in samples],
            # seconds per denoising step 2..N, the median over the rounds: the report's per-step curve
            "step_s": [_median(list(per_step)) for per_step in zip(*(s.get("step_s") or [] for s in samples))],
        }
        problems = self._recompile_problems(case, pair, counter, budget, budget_source)
        if case.backend.name == self.reference and info["e2e_s"] is not None:
            self._reference_e2e[(case.model.id, case.resolution)] = info["e2e_s"]
        problems += self._floor(case, info)
        info["verdict"] = "failed" if problems else "passed"
        info["problems"] = list(problems)
        if pair.compiled:  # keep this case's cache for the next resolution's shape switch
            if pair.last is not None and pair.last[1] is not m.cache:
                pair.last[1].remove()
            pair.last, m.keep_cache = (case.resolution, m.cache), True
        self.results.append(info)
        return SpeedVerdict(case.id, problems, info)

    def _recompile_problems(self, case, pair: _Pair, counter: RecompileCounter, budget: int, source: str) -> list[str]:
        what = f"{case.model.id}/{case.backend.name}"
        if not counter.complete:
            return [f"recompiles of {what} could not be counted: torch._dynamo.reset() ran inside the measured "
                    "block (the backend or pipeline resets dynamo) and cleared the compile callbacks"]
        problems = []
        if counter.recompile_limit_hits:
            problems.append(f"{counter.recompile_limit_hits} frame(s) of {what} hit torch._dynamo.config.recompile_limit "
                            "and now run eager: the speed measured is a silent fallback")
        if pair.recompiles > budget:
            seen = ", ".join(f"{n} at {r}" for r, n in pair.per_resolution.items())
            problems.append(
                f"{what} recompiled {pair.recompiles} time(s) across its resolutions this session ({seen}), "
                f"budget {budget} ({source}). This case's compile ids: {', '.join(counter.compile_ids) or 'none'}. "
                "A backend over budget recompiles on every new shape or on every call (a guard on a value "
                "that changes per step); find the guard with TORCH_LOGS=recompiles")
        return problems

    def _floor(self, case, info: dict[str, Any]) -> list[str]:
        floor, source = self.floor_for(case)
        info.update(reference=self.reference, min_speedup=floor, floor_source=source or None,
                    reference_e2e_s=None, speedup_vs_reference=None, floor_checked=False)
        if case.backend.name == self.reference:
            return []
        key = (case.model.id, case.resolution)
        enabled = floor is not None and self.floors_enabled()
        if key in self._reference_e2e or enabled:
            ref, measured_now = self.reference_e2e(case)
            info["reference_e2e_s"], info["reference_measured_for_floor"] = ref, measured_now
            if ref and info["e2e_s"]:
                info["speedup_vs_reference"] = ref / info["e2e_s"]
        if floor is None:
            return []
        if not enabled:
            info["floor_note"] = ("min_speedup floors are off on CPU (shared-machine timings have 3-4x outliers); "
                                  "set speedup_on_cpu = true in [speed] to check them here")
            return []
        info["floor_checked"] = True
        speedup = info["speedup_vs_reference"]
        if speedup is None or speedup < floor:
            return [f"backend {case.backend.name} is {speedup or 0:.2f}x {self.reference} on {case.model.id} @ "
                    f"{info['resolution']} (E2E median {info['e2e_s']:.4g} s vs {info['reference_e2e_s']:.4g} s, "
                    f"both measured in this session), floor {floor:g}x ({source}): it probably fell back to "
                    f"{self.reference} (a compile that failed quietly, a hook that did not attach, an option "
                    "that turned the acceleration off)"]
        return []

    # -- the whole case -----------------------------------------------------------------------
    def measure(self, case, runner: Callable[..., Any]) -> SpeedVerdict:
        """prepare -> runner(target=, setup=, rounds=, warmup_rounds=) -> finish; `runner` is
        `benchmark.pedantic` under pytest, a plain loop elsewhere (`run_rounds`)."""
        m = self.prepare(case)
        try:
            runner(target=m.target, setup=m.setup, rounds=self.settings["rounds"],
                   warmup_rounds=self.settings["warmup_rounds"])
            return self.finish(m)
        finally:
            m.close()

    def close(self) -> None:
        """Remove the compile caches kept for shape switches."""
        for pair in self._pairs.values():
            if pair.last is not None:
                pair.last[1].remove()
                pair.last = None
