"""Per-case time limits and out-of-memory outcomes: a case that never ends, or one that takes
all the memory, must end as that case's result, never as a run that hangs or dies.

**The limit.** `--case-timeout SECONDS` (0: none), else `case_timeout` in the config, else the
device class's default: 600 s on CPU (a tiny case takes seconds; a cold inductor compile of
the speed gate, twice, on a loaded 2-core machine stays under it) and 3600 s on CUDA (a cold
nexfort max-autotune compile of an SDXL-class model takes tens of minutes).

**Over the limit.** Under `--accelgate-isolate` the case's process is killed and the case is an
error naming the limit (`accelgate.isolate`). In-process, nothing can stop a thread stuck in a
kernel: the `Watchdog` calls back (the plugin writes the report so far, naming the hung case,
and prints where it hangs), then interrupts the main thread and, if that does not end it
within a grace period, ends the process.
"""
from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import ContextManager

DEFAULT_CASE_TIMEOUT = {"cpu": 600.0, "cuda": 3600.0}
GRACE_S = 20.0  # after the interrupt, before the process is ended


def case_timeout(option: float | None, configured: float | None, device: str) -> float | None:
    """Seconds a case may run here (None: no limit)."""
    if option is not None:
        return option or None
    if configured is not None:
        return configured
    return DEFAULT_CASE_TIMEOUT["cuda" if device.startswith("cuda") else "cpu"]


def limit_text(seconds: float) -> str:
    return f"{seconds:g} s (--case-timeout, or case_timeout in the config; defaults: " + \
        ", ".join(f"{k} {v:g} s" for k, v in DEFAULT_CASE_TIMEOUT.items()) + ")"


class Watchdog:
    """One daemon thread per run: `arm(label, seconds)` before a case, `disarm()` after.

    On expiry it calls `on_timeout(label, seconds)` once (from its own thread: the main thread
    is stuck), dumps every thread's stack to stderr, sends SIGINT to the main thread (pytest
    then ends the run as interrupted, writing what it has) and, if the process is still alive
    after `grace` seconds and the run is not already finishing, exits it with status 1.
    """

    def __init__(self, on_timeout: Callable[[str, float], None], grace: float = GRACE_S,
                 uncaptured: Callable[[], ContextManager] = contextlib.nullcontext):
        self.on_timeout = on_timeout
        self.grace = grace
        self.uncaptured = uncaptured  # where the messages reach the terminal (pytest captures stderr)
        self.finishing = False  # set once the session writes its report: no hard exit then
        self._lock = threading.Condition()
        self._deadline: float | None = None
        self._label = ""
        self._seconds = 0.0
        self._thread: threading.Thread | None = None

    def arm(self, label: str, seconds: float | None) -> None:
        if not seconds:
            return
        with self._lock:
            self._label, self._seconds = label, seconds
            self._deadline = time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="accelgate-watchdog", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def disarm(self) -> None:
        with self._lock:
            self._deadline = None
            self._lock.notify_all()

    def _watch(self) -> None:
        while True:
            with self._lock:
                while self._deadline is None or time.monotonic() < self._deadline:
                    wait = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
                    self._lock.wait(wait)
                label, seconds, self._deadline = self._label, self._seconds, None
            self._fire(label, seconds)

    def _fire(self, label: str, seconds: float) -> None:
        with self.uncaptured():
            try:
                self.on_timeout(label, seconds)
            finally:
                sys.stderr.write(f"\naccelgate: where {label} hangs (every thread's stack):\n")
                sys.stderr.flush()
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                sys.stderr.flush()
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(self.grace)
        if not self.finishing:
            with self.uncaptured():
                sys.stderr.write(f"accelgate: {label} did not stop after the interrupt; ending the process\n")
                sys.stderr.flush()
            os._exit(1)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError (any torch version), a MemoryError, or the CPU allocator's failure."""
    name = type(error).__name__
    return name == "OutOfMemoryError" or isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and ("CUDA out of memory" in str(error)
                                             or "DefaultCPUAllocator: can't allocate memory" in str(error)))


def out_of_memory_reason(error: BaseException, resolution: str, device: str) -> str:
    """What ran out, at which resolution, and the peak the case reached."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    peak = "peak unknown"
    if device.startswith("cuda") and "torch" in sys.modules:
        import torch

        if torch.cuda.is_initialized():
            total = torch.cuda.get_device_properties(torch.device(device)).total_memory
            peak = (f"peak {torch.cuda.max_memory_allocated(torch.device(device)) / 2**30:.2f} GiB allocated by "
                    f"torch of {total / 2**30:.1f} GiB on {torch.cuda.get_device_name(torch.device(device))}")
    else:
        import resource

        peak = f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    return (f"out of memory at {resolution} on {device} ({peak}): {first}. Run a smaller resolution, a smaller "
            "batch or dtype, or on a device with more memory; the session went on with the next case")
