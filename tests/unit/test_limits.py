"""Time limits and out-of-memory outcomes (issue 9), without a process to hang or a GPU to fill."""
import threading

import pytest
import torch

import accelgate.limits as limits
from accelgate.config.load import build_config
from accelgate.limits import Watchdog, case_timeout, is_out_of_memory
from accelgate.session import Session, verdict_for_exception


def test_the_limit_comes_from_the_option_then_the_config_then_the_device_class():
    assert case_timeout(None, None, "cpu") == 600 and case_timeout(None, None, "cuda:1") == 3600
    assert case_timeout(None, 90, "cpu") == 90 and case_timeout(30, 90, "cpu") == 30
    assert case_timeout(0, 90, "cuda") is None  # --case-timeout=0: no limit


@pytest.mark.parametrize("finishing, exits", [(False, [1]), (True, [])])
def test_the_watchdog_reports_interrupts_and_ends_a_run_that_does_not_stop(monkeypatch, finishing, exits):
    fired, signals, exited, done = [], [], [], threading.Event()
    monkeypatch.setattr(limits.signal, "pthread_kill", lambda ident, signum: signals.append(signum))
    monkeypatch.setattr(limits.os, "_exit", lambda code: (exited.append(code), done.set()))
    watchdog = Watchdog(lambda label, seconds: fired.append((label, seconds)), grace=0.2)
    watchdog.finishing = finishing
    watchdog.arm("tiny-dit/hang/32x32", 0.1)
    done.wait(2)
    if finishing:
        threading.Event().wait(0.6)
    assert fired == [("tiny-dit/hang/32x32", 0.1)] and signals == [limits.signal.SIGINT] and exited == exits


def test_a_disarmed_watchdog_stays_quiet(monkeypatch):
    fired = []
    watchdog = Watchdog(lambda label, seconds: fired.append(label), grace=0.1)
    watchdog.arm("fast", 0.3)
    watchdog.disarm()
    threading.Event().wait(0.6)
    assert fired == []


def test_out_of_memory_is_its_own_outcome_with_resolution_and_peak(tmp_path):
    config = build_config({"models": ["tiny-dit"], "model": {"tiny-dit": {"resolutions": ["64x64"]}}}, None, tmp_path)
    case = Session(config, "cpu").matrix.cases[0]
    for error in (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError(),
                  RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")):
        assert is_out_of_memory(error)
        verdict = verdict_for_exception(case, error)
        assert verdict.outcome == "oom" and "out of memory at 64x64 on cpu (process peak RSS" in verdict.reason
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
