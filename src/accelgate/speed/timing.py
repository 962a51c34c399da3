"""Speed and memory measurements that mean the same thing on every backend.

The seeds time pipelines once, with unsynchronized wall clocks (on a GPU that times kernel
*launches*, not work) and read memory through a different API per backend. Here: the device
is synchronized before any host clock is read (`WallTimer`); denoising it/s comes from
`callback_on_step_end` over steps 2..N like onediff's benchmark (`StepTimer`); peak memory
goes through one probe (`PeakMemory`). Compilation is tracked in `accelgate.speed.compile_tracking`
(recompile counting, cold vs warm compile caches).
"""
from __future__ import annotations

import gc
import re
import threading
import time
from typing import Any, Callable

import psutil
import torch

Clock = Callable[[], float]


class MeasurementError(RuntimeError):
    """A measurement could not be taken; the message says what was missing and what to do."""


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def synchronize(device: str | torch.device) -> None:
    """Wait for every kernel queued on `device` (no-op on CPU). `torch.cuda.synchronize` is
    looked up per call so a test can substitute it and prove it runs before the clock read."""
    dev = _device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type != "cpu" and hasattr(torch, "accelerator"):
        torch.accelerator.synchronize(dev)


class WallTimer:
    """Context manager: wall time of the block in `elapsed_s`. The device is synchronized
    before the start (earlier work is not charged) and before the stop (queued work is)."""

    def __init__(self, device: str | torch.device = "cpu", clock: Clock = time.perf_counter) -> None:
        self.device = _device(device)
        self._clock = clock
        self._start: float | None = None
        self._elapsed: float | None = None

    def __enter__(self) -> "WallTimer":
        synchronize(self.device)
        self._start = self._clock()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self._elapsed = self._clock() - self._start

    @property
    def elapsed_s(self) -> float:
        if self._elapsed is None:
            raise MeasurementError("WallTimer.elapsed_s was read before the timed block ended")
        return self._elapsed


def time_call(fn: Callable[[], Any], device: str | torch.device = "cpu") -> tuple[Any, float]:
    """Call `fn()` once; return its result and its synchronized wall time in seconds."""
    with WallTimer(device) as timer:
        result = fn()
    return result, timer.elapsed_s


class StepTimer:
    """A diffusers `callback_on_step_end` that timestamps the end of every denoising step.

    it/s rule (onediff's benchmark): steps 2..N, from the end of step 1 to the end of step N,
    i.e. `(N-1) / (t_N - t_1)`. Step 1 pays one-time costs (allocator growth, lazy init,
    cudagraph capture) that are not denoising speed. Under 2 steps there is no interval and
    `it_per_s` raises. Stamps are `torch.cuda.Event`s on the current stream on CUDA (GPU time,
    not launch time), `time.perf_counter` on CPU. A `user_callback` runs after the stamp and
    its return value goes back to the pipeline; without one `callback_kwargs` is returned
    unchanged. A `step_index` that does not increase starts a new record, so the timer
    describes the most recent pipeline call.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        user_callback: Callable[..., Any] | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.device = _device(device)
        self.user_callback = user_callback
        self._clock = clock
        self._indices: list[int] = []
        self._stamps: list[Any] = []

    @property
    def clock_name(self) -> str:
        return "cuda-events" if self.device.type == "cuda" else "perf_counter"

    def reset(self) -> None:
        self._indices.clear()
        self._stamps.clear()

    def __call__(self, pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> Any:
        if self._indices and step_index <= self._indices[-1]:
            self.reset()
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            self._stamps.append(event)
        else:
            self._stamps.append(self._clock())
        self._indices.append(int(step_index))
        if self.user_callback is not None:
            return self.user_callback(pipe, step_index, timestep, callback_kwargs)
        return callback_kwargs

    def call_kwargs(self) -> dict[str, Any]:
        """Pipeline kwargs installing this timer. diffusers reads `tensor_inputs` only from a
        `PipelineCallback` it is handed directly; wrapped here it would be lost, so pass it on."""
        kwargs: dict[str, Any] = {"callback_on_step_end": self}
        inputs = getattr(self.user_callback, "tensor_inputs", None)
        if inputs:
            kwargs["callback_on_step_end_tensor_inputs"] = list(inputs)
        return kwargs

    @property
    def steps(self) -> int:
        """Number of denoising steps seen in the most recent pipeline call."""
        return len(self._stamps)

    def step_durations_s(self) -> list[float]:
        """Seconds between consecutive step ends: steps 2..N, one entry per step."""
        if self.device.type == "cuda":
            if self._stamps:
                self._stamps[-1].synchronize()
            return [a.elapsed_time(b) / 1000.0 for a, b in zip(self._stamps, self._stamps[1:])]
        return [b - a for a, b in zip(self._stamps, self._stamps[1:])]

    def it_per_s(self) -> float:
        if self.steps < 2:
            raise MeasurementError(
                f"it/s needs at least 2 denoising steps (it is measured over steps 2..N, from "
                f"the end of step 1 to the end of step N) but callback_on_step_end was called "
                f"{self.steps} time(s). Run with num_inference_steps >= 2 and check that the "
                f"pipeline (or the backend wrapping it) really passes callback_on_step_end on."
            )
        total = sum(self.step_durations_s())
        if total <= 0:
            raise MeasurementError(f"steps 2..{self.steps} took {total} s: the step clock did not advance")
        return (self.steps - 1) / total


_HWM_RE = re.compile(rb"VmHWM:\s+(\d+)\s+kB")
_active_cpu_probes: list["PeakMemory"] = []
_hwm_lock = threading.Lock()


def _read_hwm() -> int | None:
    try:
        with open("/proc/self/status", "rb") as f:
            match = _HWM_RE.search(f.read())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _reset_hwm() -> bool:
    """Reset this process's kernel peak-RSS mark (Linux >= 4.0, clear_refs "5"), first handing
    the old mark to active probes so a nested probe does not erase an outer probe's peak."""
    before = _read_hwm()
    if before is None:
        return False
    for probe in _active_cpu_probes:
        probe._hwm_peak = max(probe._hwm_peak, before)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Context manager: peak memory of the block, one probe for every backend.

    Decision: `peak_bytes` = peak *above what was resident at entry* (`peak_abs_bytes -
    baseline_bytes`) on every device: the memory the call needed, comparable between backends
    run one after another in one process, where absolute numbers carry what earlier cases
    left. `peak_abs_bytes` (seed 004's "Max Mem Used" on CUDA, weights included, where
    weight-only savings like int8 show) and `baseline_bytes` are kept too.
    CUDA: synchronize, `reset_peak_memory_stats`, baseline `memory_allocated`; at exit
    synchronize, `max_memory_allocated`. Only PyTorch's allocator is seen (not oneflow's).
    CPU and others: process RSS. `ru_maxrss` is a lifetime maximum that cannot be reset, so a
    thread samples psutil RSS every `interval_s`, plus a final sample; where Linux allows,
    the kernel's peak mark (VmHWM, reset via /proc/self/clear_refs) also catches spikes
    between samples. Only touched pages count (np.empty alone is not resident).
    """

    def __init__(self, device: str | torch.device = "cpu", interval_s: float = 0.005, use_hwm: bool = True) -> None:
        self.device = _device(device)
        self.interval_s = interval_s
        self.use_hwm = use_hwm
        self.baseline_bytes = 0
        self.peak_abs_bytes = 0
        self.api = ""
        self._hwm_peak = 0
        self._hwm_ok = False
        self._sampled_max = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = psutil.Process()
        self._done = False

    @property
    def peak_bytes(self) -> int:
        if not self._done:
            raise MeasurementError("PeakMemory.peak_bytes was read before the measured block ended")
        return max(0, self.peak_abs_bytes - self.baseline_bytes)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sampled_max = max(self._sampled_max, self._proc.memory_info().rss)

    def __enter__(self) -> "PeakMemory":
        # Garbage of earlier cases is collected before the baseline: a collection that happened
        # inside the block would free it there and hide as much of this block's own allocation.
        gc.collect()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            self.api = "torch.cuda.max_memory_allocated"
            return self
        with _hwm_lock:
            self._hwm_ok = self.use_hwm and _reset_hwm()
            _active_cpu_probes.append(self)
        self.baseline_bytes = self._sampled_max = self._proc.memory_info().rss
        self.api = "process RSS (psutil sampling every %g ms%s)" % (
            self.interval_s * 1000, " + kernel VmHWM" if self._hwm_ok else "")
        self._thread = threading.Thread(target=self._sample, name="accelgate-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_abs_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._sampled_max, self._proc.memory_info().rss)
            with _hwm_lock:
                _active_cpu_probes.remove(self)
                if self._hwm_ok:
                    peak = max(peak, self._hwm_peak, _read_hwm() or 0)
            self.peak_abs_bytes = peak
        self._done = True


def measure_call(
    call: Callable[[StepTimer], Any],
    device: str | torch.device,
    user_callback: Callable[..., Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run `call(step_timer)` once; return its output and the measurement dict. The call
    passes the timer on (`callback_on_step_end=timer` or `**timer.call_kwargs()`). The memory
    probe wraps the wall timer so its set-up is not charged to E2E."""
    timer = StepTimer(device, user_callback)
    with PeakMemory(device) as memory, WallTimer(device) as wall:
        output = call(timer)
    if timer.steps == 0:
        raise MeasurementError(
            "callback_on_step_end was never called: the pipeline (or the backend wrapping it) "
            "dropped the step callback, so no it/s can be measured; pass the StepTimer to the "
            "pipeline call as callback_on_step_end")
    return output, {
        "e2e_s": wall.elapsed_s,
        "it_per_s": timer.it_per_s(),
        "steps": timer.steps,
        "step_s": timer.step_durations_s(),
        "step_clock": timer.clock_name,
        "peak_mem_bytes": memory.peak_bytes,
        "peak_mem_abs_bytes": memory.peak_abs_bytes,
        "peak_mem_baseline_bytes": memory.baseline_bytes,
        "peak_mem_api": memory.api,
    }


def measure_generation(
    call: Callable[[StepTimer], Any],
    device: str | torch.device,
    user_callback: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """`measure_call` without the output: a JSON-able dict for `benchmark.extra_info`."""
    return measure_call(call, device, user_callback)[1]
