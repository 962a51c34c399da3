"""How much of the denoiser's work a cache backend skipped: the check that catches a silent no-op.

A cache that never fires (a threshold never reached, hooks on modules the pipeline never
calls, state reset at every step) looks like a lossless backend: the same images, no
speed-up, and a green gate. Users of the field's caches keep reporting exactly that.

Counting needs no reference run. Every cache computes its first denoiser call in full (there
is nothing cached yet), so the busiest denoiser call is the full amount of work, and

    skipped fraction = 1 - leaf calls / (denoiser calls x leaf calls of the busiest one)

Counted are the calls of the denoiser's leaf modules (Linear, Conv, norms, activations): a
skipped block, attention or whole step shows as leaf calls not made, whatever the cache.
Hooks fire on eager modules only, so this is for backends that do not compile. Measured on
the tiny models at 32x32 (5 steps, 2 prompts): DeepCache 0.45-0.56, first-block cache
0.16-0.21, pyramid attention broadcast 0.03-0.10, TaylorSeer 0.05-0.10; tomesd merges tokens
and skips none (it does not declare `skips_work`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from accelgate.verdict import Check


@dataclass(frozen=True)
class SkippedWork:
    denoiser_calls: int
    leaf_calls: int
    busiest_call: int  # leaf calls of the busiest denoiser call: one call's full work

    @property
    def full(self) -> int:
        """The leaf calls had every denoiser call done all its work."""
        return self.denoiser_calls * self.busiest_call

    @property
    def fraction(self) -> float:
        return 1.0 - self.leaf_calls / self.full if self.full else 0.0

    def describe(self) -> str:
        return (f"{self.leaf_calls} of {self.denoiser_calls} x {self.busiest_call} module calls made over "
                f"{self.denoiser_calls} denoiser calls")


class WorkCounter:
    """Context manager: counts the denoiser's calls and its leaf modules' calls inside it.

    The hooks are removed on exit, so the pipeline is left as it was found."""

    def __init__(self, denoiser: Any) -> None:
        self.denoiser = denoiser
        self.per_call: list[int] = []
        self._handles: list[Any] = []

    def _new_call(self, module, args) -> None:
        self.per_call.append(0)

    def _leaf_call(self, module, args) -> None:
        if self.per_call:
            self.per_call[-1] += 1

    def __enter__(self) -> "WorkCounter":
        self._handles.append(self.denoiser.register_forward_pre_hook(self._new_call))
        leaves = [m for m in self.denoiser.modules() if next(m.children(), None) is None and m is not self.denoiser]
        self._handles += [leaf.register_forward_pre_hook(self._leaf_call) for leaf in leaves]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def result(self) -> SkippedWork:
        return SkippedWork(len(self.per_call), sum(self.per_call), max(self.per_call, default=0))


def skipped_work_check(work: SkippedWork) -> Check:
    """The check a cache backend must pass: at least one leaf-module call skipped."""
    return Check("skipped_work", work.fraction, 1.0 / work.full if work.full else 1.0, True,
                 note=f"fraction of the denoiser's module calls skipped ({work.describe()})")


def no_op_reason(backend: str, work: SkippedWork) -> str:
    return (f"silent no-op: {backend} is a cache but skipped none of the denoiser's work ({work.describe()}): "
            "it never fired. Check its options (threshold, interval, skip ranges), or set skips_work = false "
            f"in [backend.{backend}] if it is not a cache")
