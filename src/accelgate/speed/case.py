"""One speed case's pipeline calls: the arguments, the step stamps, the timed target.

Split from `accelgate.speed` (which decides what to measure and judges it) because this is
the part that touches a diffusers pipeline: which generation is timed (the first prompt of
the model's set, its fixed seed, like one image of the quality run), how the end of each
denoising step is stamped on pipelines with and without step callbacks, and the
`setup`/`target` pair handed to `benchmark.pedantic`. No pytest import.
"""
from __future__ import annotations

import inspect
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator, Mapping

from accelgate.speed.compile_tracking import CompileCache, RecompileCounter
from accelgate.speed.timing import measure_call, synchronize


def call_kwargs(pipe, case) -> dict[str, Any]:
    """One generation's arguments: the first prompt of the model's set, its fixed seed."""
    import torch

    from accelgate.generate import call_arguments, prompt_items

    item = prompt_items(case.model)[0]
    generator = torch.Generator("cpu").manual_seed(case.model.seed)
    return call_arguments(pipe, case.model, item, 0, case.width, case.height, generator)


def step_source(pipe) -> str:
    """How this pipeline's step ends can be stamped (see `step_stamps`)."""
    parameters = inspect.signature(type(pipe).__call__).parameters
    if "callback_on_step_end" in parameters:
        return "callback_on_step_end"
    return "callback" if "callback" in parameters and "callback_steps" in parameters else "scheduler.step"


@contextmanager
def step_stamps(pipe, timer) -> Iterator[dict[str, Any]]:
    """Pipeline kwargs (and, where needed, a patch) that stamp the end of each denoising step.

    `callback_on_step_end` where the pipeline has it (SD, SDXL, pix2pix); the legacy
    `callback(step, t, latents)` with callback_steps=1 (PixArt); otherwise (DiT has no step
    callback at all) a wrapper around `scheduler.step`, which every diffusers loop calls last
    in a step, right where the callbacks run. All three feed the same `StepTimer`.
    """
    source = step_source(pipe)
    if source == "callback_on_step_end":
        yield timer.call_kwargs()
        return
    if source == "callback":
        yield {"callback": lambda i, t, latents: timer(pipe, i, t, {}), "callback_steps": 1}
        return
    from accelgate.generate import scheduler_steps

    with scheduler_steps(pipe, lambda index: timer(pipe, index, None, {})):
        yield {}


def generate_once(pipe, case, kwargs: Mapping[str, Any], timer=None) -> Any:
    """One pipeline call inside the backend's call context (cache hooks reset there)."""
    with case.backend.call_context(pipe), ExitStack() as stack:
        extra = stack.enter_context(step_stamps(pipe, timer)) if timer is not None else {}
        return pipe(**kwargs, **extra)


class CaseMeasurement:
    """One case between `SpeedSession.prepare` and `SpeedSession.finish`: the warmed-up
    pipeline, `setup`/`target` for `benchmark.pedantic`, and what the warmups measured."""

    def __init__(self, session, case, pipe, cache: CompileCache, counter: RecompileCounter, stack: ExitStack):
        self.session, self.case, self.pipe, self.cache = session, case, pipe, cache
        self.device = session.device
        self.samples: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}
        self.counter = counter
        self.stack = stack
        self.keep_cache = False

    def setup(self) -> tuple[tuple, dict[str, Any]]:
        """Outside the timed region: fresh seeded arguments, queued device work finished
        (pytest-benchmark's clock starts right after this returns)."""
        kwargs = call_kwargs(self.pipe, self.case)
        synchronize(self.device)
        return (), {"kwargs": kwargs}

    def target(self, kwargs: Mapping[str, Any]) -> None:
        """One timed generation; ends with a device sync, so pytest-benchmark's own clock
        (stopped right after this returns) includes every queued kernel."""
        _, sample = measure_call(lambda timer: generate_once(self.pipe, self.case, kwargs, timer), self.device)
        sample["step_source"] = step_source(self.pipe)
        self.samples.append(sample)

    def close(self) -> None:
        self.stack.close()
        if not self.keep_cache:
            self.cache.remove()
        self.pipe = None
        self.session.free_memory()


def run_rounds(target: Callable[..., Any], setup: Callable[[], tuple], rounds: int, warmup_rounds: int) -> None:
    """`benchmark.pedantic`'s calling convention without pytest-benchmark (scripts, tests)."""
    for _ in range(warmup_rounds + rounds):
        args, kwargs = setup()
        target(*args, **kwargs)
