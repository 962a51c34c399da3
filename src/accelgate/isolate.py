"""`--accelgate-isolate`: each case in its own process, for what the sandbox cannot restore.

A backend can change what no Python code can put back (a CUDA context setting, a kernel
registered with the dispatcher, a C library's global), crash the interpreter, or hang in a
kernel. Run in a child process, its case ends with its own verdict, the child's state dies
with it, and a case over its time limit is killed and reported as an error naming the limit.

The child is forked from multiprocessing's forkserver (spawned where there is none; never a
fork of the pytest process, which is unsafe once CUDA or OpenMP threads exist), rebuilds the
config from the same TOML data and the session on the same device, finds the case by id, and
calls the gate's runner (`"module:function"`, called as `runner(session, case, **kwargs)`)
whose return value must pickle. The price: every case reads its model from disk again
(seconds for the tiny models, minutes for an SDXL-class model), and the distribution gate
renders its reference set in every child.
"""
from __future__ import annotations

import importlib
import multiprocessing
import signal
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

from accelgate.limits import limit_text


class CaseTimedOut(Exception):
    """The case ran past its limit and its process was killed."""


class CaseProcessDied(Exception):
    """The case's process ended without a result (a crash, a signal, os._exit)."""


class IsolatedSetupError(Exception):
    """The child could not set the case up (config, session, runner): the message carries its traceback."""


@dataclass(frozen=True)
class Job:
    raw: dict[str, Any]
    source: str | None
    root: str
    device: str
    case_id: str
    runner: str  # "module:function"
    kwargs: dict[str, Any] = field(default_factory=dict)
    sys_path: tuple[str, ...] = ()


def child_result(job: Job, conn, build) -> None:
    """In the child: `build(job)` gives the session and the case, the runner gives the result,
    which goes back through `conn` (or the exception, as text)."""
    sys.path[:0] = [p for p in job.sys_path if p not in sys.path]
    try:
        session, case = build(job)
        module, _, function = job.runner.partition(":")
        conn.send(("ok", getattr(importlib.import_module(module), function)(session, case, **job.kwargs)))
    except BaseException as error:  # noqa: BLE001 (everything goes back to the parent as text)
        conn.send(("raised", f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=-8)}"))
    finally:
        conn.close()


_CONTEXTS: dict[str, Any] = {}


def _context(runner: str):
    """forkserver where there is one: a clean server process imports torch, diffusers and the
    gate once, and each case is a fork of it (seconds saved per case, and never a fork of this
    process, whose threads and CUDA state a fork would copy); spawn elsewhere."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if method not in _CONTEXTS:
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload(["torch", "diffusers", "accelgate.session", runner.partition(":")[0]])
        _CONTEXTS[method] = context
    return _CONTEXTS[method]


def run_isolated(job: Job, timeout: float | None, target) -> Any:
    """The runner's result from a child process running `target(job, conn)` (a module-level
    function: spawn imports it by name); CaseTimedOut, CaseProcessDied or IsolatedSetupError otherwise."""
    context = _context(job.runner)
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(job, send), name=f"accelgate {job.case_id}", daemon=True)
    process.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise CaseTimedOut(f"{job.case_id} ran past its time limit of {limit_text(timeout)} and its process was "
                               "killed (--accelgate-isolate); raise the limit if the case is merely slow")
        try:
            kind, value = receive.recv()
        except EOFError:
            process.join(5)
            code = process.exitcode
            what = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
            raise CaseProcessDied(f"the process running {job.case_id} died without a result ({what}): the backend "
                                  "or pipeline crashed the interpreter; see the captured output") from None
        if kind == "raised":
            raise IsolatedSetupError(f"the isolated process running {job.case_id} raised {value}")
        return value
    finally:
        if process.is_alive():
            process.kill()
        process.join(10)
        receive.close()
