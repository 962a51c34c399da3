"""What a compiler did during a measurement: compilations, recompiles, eager fallbacks, and
which on-disk cache it could use.

An accelerated backend regresses silently in three ways a timer alone cannot explain: it
recompiles on every new shape (or every call), it hits dynamo's recompile limit and quietly
runs eager, or its warmup got slower because the compile cache stopped working.
`RecompileCounter` counts the first two from dynamo's own compile callbacks; `CompileCache`
pins the on-disk caches so "cold" (compile included) and "warm-cache" (process restarted,
cache kept) warmups are two separate, reproducible numbers like the seeds report them.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ContextManager, Iterator

import torch

from accelgate.speed.timing import MeasurementError


class RecompileBudgetExceeded(AssertionError):
    """A backend compiled more often than it declared; an AssertionError so pytest fails it."""


_COMPILE_ID_RE = re.compile(r"^(?:!\d+/)?(\d+)/(\d+)")
_LIMIT_HIT = "Dynamo recompile limit exceeded"
_active_counters: list["RecompileCounter"] = []


def _counter_snapshot() -> dict[str, Counter]:
    from torch._dynamo.utils import counters

    return {k: Counter(v) for k, v in counters.items()}


def split_compile_id(compile_id: str) -> tuple[int, int] | None:
    """"F/C" (or compiled autograd's "!N/F/C") -> (frame F, its C-th compilation), else None."""
    match = _COMPILE_ID_RE.match(str(compile_id))
    return (int(match.group(1)), int(match.group(2))) if match else None


class RecompileCounter:
    """Context manager: torch.compile (dynamo) compilations started during the block.

    `torch._dynamo.callback.callback_handler` (behind `torch._dynamo.on_compile_start`) calls
    back once per frame compilation with compile id "F/C": frame F compiled for the C-th
    time. C == 0 is a first compile (graph-break resume functions are frames of their own),
    C > 0 a recompile after a failed guard: `dynamic=False` at k resolutions gives k-1.
    Dynamo's `counters` add graph breaks and recompile-limit hits (frames that reached
    `torch._dynamo.config.recompile_limit` and silently run eager from then on).
    Warm inductor caches do not change the counts (dynamo still traces); compilers that
    bypass dynamo (oneflow) are not seen. A foreign `torch._dynamo.reset()` in the block
    clears dynamo's callbacks: reported as `complete=False`, and `check_budget` refuses;
    `reset_compiler_state` (used by `CompileCache`) re-registers active counters instead.
    """

    def __init__(self) -> None:
        self.compile_ids: list[str] = []
        self.triggers: Counter = Counter()
        self.graph_breaks = 0
        self.recompile_limit_hits = 0
        self.complete = True
        self._before: dict[str, Counter] = {}
        self._lock = threading.Lock()

    def _on_start(self, args: Any) -> None:
        with self._lock:
            trigger = getattr(args.callback_trigger, "name", str(args.callback_trigger))
            self.triggers[trigger] += 1
            if trigger == "DYNAMO":
                self.compile_ids.append(str(args.compile_id))

    def __enter__(self) -> "RecompileCounter":
        from torch._dynamo.callback import callback_handler

        self._before = _counter_snapshot()
        callback_handler.register_start_callback(self._on_start)
        _active_counters.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        from torch._dynamo.callback import callback_handler

        _active_counters.remove(self)
        if self._on_start in callback_handler.start_callbacks:
            callback_handler.remove_start_callback(self._on_start)
        else:
            self.complete = False
        after = _counter_snapshot()
        delta = {k: after[k] - self._before.get(k, Counter()) for k in after}
        self.graph_breaks = sum(delta.get("graph_break", Counter()).values())
        self.recompile_limit_hits = sum(
            n for reason, n in delta.get("unimplemented", Counter()).items() if reason.startswith(_LIMIT_HIT))

    @property
    def compiles(self) -> int:
        """Every dynamo frame compilation in the block, first compiles and recompiles."""
        return len(self.compile_ids)

    @property
    def recompiles(self) -> int:
        """Compilations of a frame that had already been compiled (compile id F/C, C > 0)."""
        return sum(1 for cid in self.compile_ids if (parts := split_compile_id(cid)) and parts[1] > 0)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able; `other_events` counts non-dynamo compile events (CUDAGRAPH_RECORDING...)."""
        return {"compiles": self.compiles, "recompiles": self.recompiles, "graph_breaks": self.graph_breaks,
                "recompile_limit_hits": self.recompile_limit_hits, "compile_ids": list(self.compile_ids),
                "other_events": {k: n for k, n in self.triggers.items() if k != "DYNAMO"},
                "complete": self.complete}

    def check_budget(self, budget: int, what: str = "this backend") -> None:
        """Fail when recompiles exceed `budget` or any frame fell back to eager."""
        if not self.complete:
            raise RecompileBudgetExceeded(
                f"recompiles of {what} could not be counted: torch._dynamo.reset() ran inside the "
                f"counted block and cleared dynamo's compile callbacks; count outside any reset")
        problems = []
        if self.recompiles > budget:
            problems.append(f"{self.recompiles} recompile(s), budget {budget} "
                            f"(compile ids: {', '.join(self.compile_ids)})")
        if self.recompile_limit_hits:
            problems.append(f"{self.recompile_limit_hits} frame(s) hit torch._dynamo.config.recompile_limit "
                            f"and now run eager")
        if problems:
            raise RecompileBudgetExceeded(f"{what}: " + "; ".join(problems))


NEXFORT_ENV = {"NEXFORT_GRAPH_CACHE": "1"}  # nexfort reads it at import: set before importing


def reset_compiler_state() -> None:
    """Forget every in-process compile result (dynamo code caches, inductor's in-memory
    caches), so the next first call compiles again and only on-disk caches can help it."""
    from torch._dynamo.callback import callback_handler
    from torch._inductor.utils import clear_caches

    torch._dynamo.reset()  # also clears dynamo's compile callbacks: put active counters back
    for counter in _active_counters:
        callback_handler.register_start_callback(counter._on_start)
    clear_caches()


class CompileCache:
    """One on-disk compile cache directory, used first cold, then warm.

    `cold()` empties it, `warm()` keeps what the cold run wrote. Both point
    TORCHINDUCTOR_CACHE_DIR (FX graph, AOTAutograd, autotune caches) and TRITON_CACHE_DIR at
    it, set NEXFORT_GRAPH_CACHE=1 (nexfort's graph cache, per onediff's docs used together
    with TORCHINDUCTOR_CACHE_DIR; nexfort reads it at import) and reset in-process compiler
    state, so "warm" means on-disk cache kept, process state fresh, like the seeds' restart.
    The environment is restored on exit. Recipe: `with cache.cold(): cold_s =
    time_call(build_and_first_call, dev)[1]`, then the same under `cache.warm()` (rebuild the
    pipeline: the reset drops compiled code).
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.path = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="accelgate-compile-"))

    def files(self) -> int:
        return sum(len(names) for _, _, names in os.walk(self.path)) if self.path.exists() else 0

    @contextmanager
    def _use(self, reset: bool = True) -> Iterator["CompileCache"]:
        env = {"TORCHINDUCTOR_CACHE_DIR": str(self.path), "TRITON_CACHE_DIR": str(self.path / "triton"), **NEXFORT_ENV}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            if reset:
                reset_compiler_state()
            yield self
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def cold(self) -> ContextManager["CompileCache"]:
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        return self._use()

    def warm(self) -> ContextManager["CompileCache"]:
        if self.files() == 0:
            raise MeasurementError(
                f"warm-cache warmup asked for, but the compile cache {self.path} is empty: "
                f"run the cold warmup with this CompileCache first")
        return self._use()

    def reuse(self) -> ContextManager["CompileCache"]:
        """Point the caches here but keep in-process compile state (no reset): a recompile
        for a shape this cache already holds is then a warm-cache compile. The speed run
        uses it to switch a compiled pipeline back to an earlier case's resolution, which
        must not pay a cold compile just to be counted, nor reset the counter's frame ids."""
        return self._use(reset=False)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
