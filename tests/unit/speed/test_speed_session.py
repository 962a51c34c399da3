"""The speed library (accelgate.speed) on the tiny DiT: schema, extra_info, it/s against an
independent clock, the memory probe in the flow, recompile budgets and speed-up floors.

(Named test_speed_session.py: tests/test_speed.py already owns the basename `test_speed`, and
pytest's default import mode refuses two test modules with one basename.)

CPU timings here have 3-4x outliers, so nothing asserts an absolute speed. Where a speed
must be known, a fake backend sleeps in every denoiser call: the sleep dominates the ~2 ms
of compute, so ratios and rates are stable. Dynamo is exercised with backend="eager"
(tracing only, no inductor), which counts compiles exactly like inductor does.
"""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from accelgate.config.load import build_config
from accelgate.config.schema import ConfigError
from accelgate.config.speed import DEFAULTS, Floor, validate_speed_table
from accelgate.matrix import build_matrix
from accelgate.session import Session
from accelgate.speed.case import run_rounds
from accelgate.speed.session import SpeedSession
from accelgate.speed.timing import WallTimer

MiB = 2**20
pytestmark = pytest.mark.usefixtures("one_thread")

_SESSIONS: list[SpeedSession] = []


@pytest.fixture(autouse=True)
def close_sessions():
    """Like the plugin at session end: remove the compile caches kept for shape switches."""
    yield
    while _SESSIONS:
        _SESSIONS.pop().close()


@pytest.fixture
def fakes(example_backends):
    """fixtures.speed_backends (sleepy, hog, recompiler) importable by factory path."""
    return example_backends


def session_for(root: Path, backends: dict[str, str], speed: dict | None = None, reference: str | None = None,
                resolutions=("32x32",), steps: int = 3) -> tuple[SpeedSession, list]:
    """A SpeedSession over tiny-dit and the given backends: name -> TOML table body."""
    lines = ['models = ["tiny-dit"]', f"backends = {json.dumps(list(backends))}",
             f'reference = "{reference or next(iter(backends))}"',
             "[model.tiny-dit]", f"steps = {steps}", f"resolutions = {json.dumps(list(resolutions))}"]
    for name, body in backends.items():
        if body:
            lines += [f"[backend.{name}]", textwrap.dedent(body).strip()]
    if speed:
        lines += ["[speed]"] + [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in speed.items()]
    path = root / "accelgate.toml"
    path.write_text("\n".join(lines) + "\n")
    import tomllib

    config = build_config(tomllib.loads(path.read_text()), path, root)
    matrix = build_matrix(config)
    session = SpeedSession(Session(config, "cpu"))
    _SESSIONS.append(session)
    return session, list(matrix.cases)


def case_of(cases, backend, resolution="32x32"):
    return next(c for c in cases if c.backend.name == backend and c.id.endswith(resolution))


# ---------------------------------------------------------------- [speed] schema


def test_speed_table_defaults():
    assert validate_speed_table({}, "x.toml, [speed]") == {**DEFAULTS, "floors": ()}


def test_floors_are_parsed():
    settings = validate_speed_table({"rounds": 5, "speedup_on_cpu": True, "floors": [
        {"backend": "torch-compile", "min_speedup": 1.2},
        {"backend": "deepcache", "model": "sdxl-realvis", "min_speedup": 2, "reason": "interval 3"}]}, "w")
    assert settings["rounds"] == 5 and settings["warmup_rounds"] == 1 and settings["speedup_on_cpu"] is True
    assert settings["floors"] == (Floor("torch-compile", None, 1.2), Floor("deepcache", "sdxl-realvis", 2.0, "interval 3"))


@pytest.mark.parametrize("table, message", [
    ({"round": 3}, r"x.toml, \[speed\]: unknown key 'round' \(did you mean 'rounds'\?\); allowed keys: floors, rounds, "
                   r"speedup_on_cpu, warmup_rounds"),
    ({"rounds": "3"}, r"key 'rounds' must be a int, got str '3'"),
    ({"speedup_on_cpu": 1}, r"key 'speedup_on_cpu' must be a bool, got int 1"),
    ({"rounds": 0}, r"rounds must be >= 1"),
    ({"warmup_rounds": -1}, r"warmup_rounds must be >= 0"),
    ({"floors": {"backend": "x"}}, r"key 'floors' must be a list"),
    ({"floors": ["torch-compile"]}, r"floors entry #1: each floor must be a table"),
    ({"floors": [{"backend": "bf16"}]}, r"floors entry #1: missing min_speedup"),
    ({"floors": [{"backend": "bf16", "min_speedup": 0}]}, r"min_speedup must be > 0"),
    ({"floors": [{"backend": "bf16", "min_speedup": 1.1, "modle": "x"}]}, r"floors entry #1: unknown key 'modle'"),
    ({"floors": [{"backend": "bf16", "min_speedup": 1.1}, {"backend": "bf16", "min_speedup": 1.2}]},
     r"floors entry #2: a second floor for backend 'bf16'"),
])
def test_speed_table_errors_name_the_place_and_the_fix(table, message):
    with pytest.raises(ConfigError, match=message):
        validate_speed_table(table, "x.toml, [speed]")


def test_floor_naming_a_backend_outside_the_matrix_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"floors: backend 'torch-compil' is not in the matrix; backends: eager"):
        session_for(tmp_path, {"eager": ""}, speed={"floors": '[{backend = "torch-compil", min_speedup = 1.2}]'})


def test_floor_precedence_model_then_backend_then_backend_table(tmp_path, fakes):
    floors = ('[{backend = "fast", min_speedup = 1.5}, '
              '{backend = "fast", model = "tiny-dit", min_speedup = 2.5, reason = "measured"}]')
    session, cases = session_for(tmp_path, {"eager": "", "fast": 'factory = "fixtures.speed_backends:sleepy"\nmin_speedup = 1.1',
                                            "other": 'factory = "fixtures.speed_backends:sleepy"\nmin_speedup = 1.1'},
                                 speed={"floors": floors})
    assert session.floor_for(case_of(cases, "fast")) == (2.5, "measured")
    assert session.floor_for(case_of(cases, "other")) == (1.1, "[backend.other] min_speedup")
    assert session.floor_for(case_of(cases, "eager")) == (None, "")
    assert not session.floors_enabled()  # CPU: off unless speedup_on_cpu


# ---------------------------------------------------------------- one case, measured


def test_extra_info_holds_every_number_and_it_per_s_matches_an_independent_clock(tmp_path, fakes):
    """it/s from the step stamps (steps 2..N) against a plain wall clock over whole calls of
    the same pipeline in the same process: (8 - 3) steps / (T(8 steps) - T(3 steps))."""
    session, cases = session_for(tmp_path, {"eager": "", "sleepy": 'factory = "fixtures.speed_backends:sleepy"\noptions = {delay = 0.2}'},
                                 steps=5)
    case = case_of(cases, "sleepy")
    m = session.prepare(case)
    try:
        run_rounds(m.target, m.setup, rounds=3, warmup_rounds=1)
        times = {}
        for steps in (3, 8):
            kwargs = {**m.setup()[1]["kwargs"], "num_inference_steps": steps}
            with WallTimer("cpu") as wall:
                m.pipe(**kwargs)
            times[steps] = wall.elapsed_s
        verdict = session.finish(m)
    finally:
        m.close()
    info = verdict.extra_info
    independent = (8 - 3) / (times[8] - times[3])
    assert info["it_per_s"] == pytest.approx(independent, rel=0.05)
    assert verdict.passed, verdict.message
    for key in ("it_per_s", "e2e_s", "peak_mem_bytes", "cold_warmup_s", "warm_warmup_s", "recompiles",
                "recompile_budget", "model", "backend", "resolution", "peak_mem_api"):
        assert info[key] is not None, key
    assert (info["model"], info["backend"], info["resolution"]) == ("tiny-dit", "sleepy", "32x32")
    assert info["rounds"] == 3 and len(info["samples"]) == 3 and info["steps"] == 5
    assert info["step_source"] == "scheduler.step"  # DiTPipeline has no step callback
    assert info["e2e_s"] > 5 * 0.2  # five sleeps per call, never fewer
    # nothing compiled: the first call is both warmups, measured once
    assert info["compiled"] is False and info["warm_warmup_s"] == info["cold_warmup_s"]
    assert info["recompiles"] == 0 and info["recompile_budget"] == 0
    assert session.results == [info]


def test_peak_memory_goes_through_one_probe_and_sees_a_backend_allocation(tmp_path, fakes):
    session, cases = session_for(tmp_path, {"eager": "", "hog": 'factory = "fixtures.speed_backends:hog"\noptions = {mib = 96}'})
    infos = {c.backend.name: session.measure(c, run_rounds).extra_info for c in cases}
    assert infos["hog"]["peak_mem_bytes"] >= 90 * MiB
    assert infos["eager"]["peak_mem_bytes"] < 48 * MiB
    assert infos["hog"]["peak_mem_api"] == infos["eager"]["peak_mem_api"]
    assert "RSS" in infos["hog"]["peak_mem_api"]


# ---------------------------------------------------------------- recompiles


def test_a_backend_recompiling_on_every_call_fails_its_budget(tmp_path, fakes):
    session, cases = session_for(tmp_path, {"eager": "", "recomp": 'factory = "fixtures.speed_backends:recompiler"'})
    verdict = session.measure(case_of(cases, "recomp"), run_rounds)
    info = verdict.extra_info
    assert not verdict.passed
    assert info["compiled"] is True and info["recompiles"] >= 7
    assert "hit torch._dynamo.config.recompile_limit and now run eager" in verdict.message
    assert "tiny-dit/recomp recompiled" in verdict.message and "budget 0 (default" in verdict.message
    assert "TORCH_LOGS=recompiles" in verdict.message


COMPILE_EAGER = 'options = {backend = "eager"}'  # dynamo traces, no inductor: seconds, not minutes


def test_one_graph_per_resolution_passes_the_default_budget(tmp_path):
    """Two resolutions: the second case switches the compiled pipeline back to the first
    resolution (step 4) and sees one recompile per compiled frame; that is the default budget."""
    session, cases = session_for(tmp_path, {"eager": "", "torch-compile": COMPILE_EAGER},
                                 resolutions=("32x32", "64x64"))
    first = session.measure(case_of(cases, "torch-compile", "32x32"), run_rounds)
    second = session.measure(case_of(cases, "torch-compile", "64x64"), run_rounds)
    assert first.passed and second.passed, (first.message, second.message)
    assert first.extra_info["compiled"] and first.extra_info["warm_cache_measured"]
    assert first.extra_info["recompiles"] == 0 and "shape_switch_s" not in first.extra_info
    info = second.extra_info
    assert info["shape_switch_from"] == "32x32" and info["shape_switch_s"] > 0
    assert info["recompiles"] >= 1 and info["recompiles_total"] == info["recompile_budget"]
    assert "one graph per resolution" in info["recompile_budget_source"]


def test_a_declared_budget_of_zero_fails_on_the_second_resolution(tmp_path):
    """What a backend claiming dynamic shapes declares: no recompile on a new resolution."""
    session, cases = session_for(tmp_path, {"eager": "", "torch-compile": COMPILE_EAGER + "\nrecompile_budget = 0"},
                                 resolutions=("32x32", "64x64"))
    assert session.measure(case_of(cases, "torch-compile", "32x32"), run_rounds).passed
    verdict = session.measure(case_of(cases, "torch-compile", "64x64"), run_rounds)
    assert not verdict.passed
    assert "budget 0 (declared recompile_budget = 0)" in verdict.message
    assert "0 at 32x32" in verdict.message and "at 64x64" in verdict.message


# ---------------------------------------------------------------- speed-up floors


# Nominal speed-ups against "slow": fast 9x+ (floor 2 holds while compute < 0.6 s a call),
# fallback 1.0x (floor 1.5 fails unless contention hits "slow" 0.37 s a call harder).
FLOOR_BACKENDS = {
    "slow": 'factory = "fixtures.speed_backends:sleepy"\noptions = {delay = 0.25}',
    "fast": 'factory = "fixtures.speed_backends:sleepy"\noptions = {delay = 0.02}\nmin_speedup = 2',
    "fallback": 'factory = "fixtures.speed_backends:sleepy"\noptions = {delay = 0.25}\nmin_speedup = 1.5',
}


def test_floors_against_the_reference_measured_in_this_session(tmp_path, fakes):
    session, cases = session_for(tmp_path, FLOOR_BACKENDS, speed={"speedup_on_cpu": True}, reference="slow")
    verdicts = {c.backend.name: session.measure(c, run_rounds) for c in cases}
    assert verdicts["slow"].passed and verdicts["fast"].passed, verdicts["fast"].message
    fast = verdicts["fast"].extra_info
    assert fast["floor_checked"] and fast["speedup_vs_reference"] > 2  # nominal 4.5
    assert fast["reference_measured_for_floor"] is False  # the reference case ran first
    message = verdicts["fallback"].message
    assert not verdicts["fallback"].passed
    assert re.search(r"backend fallback is [01]\.\d\dx slow on tiny-dit @ 32x32", message), message
    assert "floor 1.5x" in message
    assert "it probably fell back to slow" in message


def test_a_floor_measures_the_reference_itself_when_it_has_not_run(tmp_path, fakes):
    session, cases = session_for(tmp_path, FLOOR_BACKENDS, speed={"speedup_on_cpu": True}, reference="slow")
    verdict = session.measure(case_of(cases, "fast"), run_rounds)  # -k fast: no reference case before it
    assert verdict.passed, verdict.message
    assert verdict.extra_info["reference_measured_for_floor"] is True
    assert verdict.extra_info["speedup_vs_reference"] > 2


def test_floors_are_off_on_cpu_by_default(tmp_path, fakes):
    session, cases = session_for(tmp_path, FLOOR_BACKENDS, reference="slow")
    verdict = session.measure(case_of(cases, "fallback"), run_rounds)
    assert verdict.passed
    info = verdict.extra_info
    assert info["floor_checked"] is False and info["min_speedup"] == 1.5
    assert "speedup_on_cpu = true" in info["floor_note"]
    assert info["speedup_vs_reference"] is None  # the reference was not measured: nothing to compare


# ---------------------------------------------------------------- the real compiler


@pytest.mark.slow
def test_inductor_cold_warmup_pays_the_compile_and_warm_cache_does_not(tmp_path):
    """torch.compile with inductor on the tiny DiT: ~10-20 s cold, under 1 s warm here."""
    session, cases = session_for(tmp_path, {"eager": "", "torch-compile": ""})
    info = session.measure(case_of(cases, "torch-compile"), run_rounds).extra_info
    assert info["compiled"] and info["warm_cache_measured"] and info["compile_cache_files"] > 0
    assert info["cold_warmup_s"] > 3 * info["warm_warmup_s"], info


# ---------------------------------------------------------------- step stamps


class _Scheduler:
    def step(self, x):
        return x + 1


class _NoCallbackPipe:
    """Stands for DiTPipeline: no step callback of any kind, scheduler.step once per step."""

    def __init__(self):
        self.scheduler = _Scheduler()

    def __call__(self, steps=4):
        x = 0
        for _ in range(steps):
            x = self.scheduler.step(x)
        return x


class _LegacyCallbackPipe(_NoCallbackPipe):
    """Stands for PixArtSigmaPipeline: callback(step, t, latents) every callback_steps."""

    def __call__(self, steps=4, callback=None, callback_steps=1):
        for i in range(steps):
            if callback is not None and i % callback_steps == 0:
                callback(i, 999 - i, None)
        return steps


@pytest.mark.parametrize("pipe_class, source", [(_NoCallbackPipe, "scheduler.step"), (_LegacyCallbackPipe, "callback")])
def test_step_stamps_without_callback_on_step_end(pipe_class, source):
    from accelgate.speed.case import step_source, step_stamps
    from accelgate.speed.timing import StepTimer

    pipe, timer = pipe_class(), StepTimer("cpu")
    before = pipe.scheduler.step
    assert step_source(pipe) == source
    with step_stamps(pipe, timer) as extra:
        pipe(steps=4, **extra)
    assert timer.steps == 4 and timer.it_per_s() > 0
    assert "step" not in vars(pipe.scheduler) and pipe.scheduler.step == before  # the wrapper is gone


def test_step_stamps_restore_a_scheduler_patched_before():
    from accelgate.speed.case import step_stamps
    from accelgate.speed.timing import StepTimer

    pipe = _NoCallbackPipe()
    own = pipe.scheduler.step
    pipe.scheduler.step = own  # an instance attribute someone else set
    with step_stamps(pipe, StepTimer("cpu")):
        assert pipe.scheduler.step is not own
    assert vars(pipe.scheduler)["step"] is own
