"""The timer, the step timer and the memory probe (compile tracking: test_compile_tracking.py).

Timings on the shared CI machines have 3-4x outliers, so nothing here asserts an absolute
speed: clocks are faked where exact numbers are checked, and real timings are only compared
with each other within one run.
"""
from __future__ import annotations

import json
import mmap
import time

import numpy as np
import pytest
import torch

from accelgate.speed.timing import (
    MeasurementError, PeakMemory, StepTimer, WallTimer, measure_call, measure_generation, time_call,
)

MiB = 2**20


class FakeClock:
    """perf_counter stand-in: returns the scripted times and logs each read."""

    def __init__(self, times, log=None):
        self.times = list(times)
        self.log = log if log is not None else []

    def __call__(self):
        self.log.append("clock")
        return self.times.pop(0)


# ---------------------------------------------------------------- WallTimer


def test_wall_timer_synchronizes_cuda_before_reading_the_clock(monkeypatch):
    log = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(f"sync {device}"))
    clock = FakeClock([10.0, 12.5], log)
    with WallTimer("cuda:0", clock=clock) as timer:
        log.append("work queued")
    assert log == ["sync cuda:0", "clock", "work queued", "sync cuda:0", "clock"]
    assert timer.elapsed_s == 2.5


def test_wall_timer_on_cpu_never_touches_cuda(monkeypatch):
    def boom(device=None):
        raise AssertionError("CPU timing must not synchronize CUDA")

    monkeypatch.setattr(torch.cuda, "synchronize", boom)
    with WallTimer("cpu", clock=FakeClock([1.0, 1.25])) as timer:
        pass
    assert timer.elapsed_s == 0.25


def test_wall_timer_reading_before_the_end_is_an_error():
    timer = WallTimer("cpu")
    with pytest.raises(MeasurementError, match="before the timed block ended"):
        timer.elapsed_s


def test_time_call_orders_real_sleeps_by_ratio():
    result, short = time_call(lambda: time.sleep(0.01) or "short")
    _, long = time_call(lambda: time.sleep(0.2))
    assert result == "short"
    assert short >= 0.01 and long >= 0.2  # sleep never returns early
    assert long / short > 2  # nominal 20; leaves room for a 4x outlier on the short one


# ---------------------------------------------------------------- StepTimer


def test_step_timer_rate_is_over_steps_2_to_n():
    clock = FakeClock([0.0, 1.0, 1.5, 2.0, 2.5])  # step 1 ends at 0 s (slow first step excluded)
    timer = StepTimer("cpu", clock=clock)
    for i in range(5):
        timer(None, i, 999 - i, {})
    assert timer.steps == 5
    assert timer.step_durations_s() == [1.0, 0.5, 0.5, 0.5]
    assert timer.it_per_s() == pytest.approx(4 / 2.5)  # N-1 steps over t_N - t_1, not 5/2.5


@pytest.mark.parametrize("calls", [0, 1])
def test_step_timer_needs_two_steps(calls):
    timer = StepTimer("cpu", clock=FakeClock([0.0]))
    for i in range(calls):
        timer(None, i, 0, {})
    with pytest.raises(MeasurementError, match=r"at least 2 denoising steps .* called %d time" % calls):
        timer.it_per_s()


def test_step_timer_returns_callback_kwargs_unchanged_without_user_callback():
    kwargs = {"latents": torch.zeros(1)}
    assert StepTimer("cpu")(None, 0, 1, kwargs) is kwargs


def test_step_timer_composes_with_a_user_callback():
    seen = []

    def user(pipe, i, t, kwargs):
        seen.append((pipe, i, t, kwargs))
        return {"latents": kwargs["latents"] + 1}

    timer = StepTimer("cpu", user_callback=user, clock=FakeClock([0.0, 2.0]))
    out0 = timer("pipe", 0, 10, {"latents": torch.zeros(1)})
    out1 = timer("pipe", 1, 9, {"latents": torch.ones(1)})
    assert [s[1:3] for s in seen] == [(0, 10), (1, 9)]
    assert out0["latents"].item() == 1 and out1["latents"].item() == 2  # user's return reaches the pipeline
    assert timer.it_per_s() == pytest.approx(0.5)


def test_step_timer_call_kwargs_keep_a_pipeline_callbacks_tensor_inputs():
    class UserCallback:
        tensor_inputs = ["latents", "prompt_embeds"]

        def __call__(self, pipe, i, t, kwargs):
            return kwargs

    timer = StepTimer("cpu", user_callback=UserCallback())
    assert timer.call_kwargs() == {"callback_on_step_end": timer,
                                   "callback_on_step_end_tensor_inputs": ["latents", "prompt_embeds"]}
    plain = StepTimer("cpu")
    assert plain.call_kwargs() == {"callback_on_step_end": plain}


def test_step_timer_describes_the_latest_pipeline_call():
    timer = StepTimer("cpu", clock=FakeClock([0, 1, 2, 10, 10.5]))
    for i in range(3):
        timer(None, i, 0, {})
    for i in range(2):  # a second call restarts at step 0
        timer(None, i, 0, {})
    assert timer.steps == 2 and timer.it_per_s() == pytest.approx(2.0)


def test_step_timer_uses_cuda_events_on_gpu(monkeypatch):
    now = iter([0.0, 0.1, 0.15, 0.2])  # GPU times in seconds at each record()
    synced = []

    class FakeEvent:
        def __init__(self, enable_timing=False):
            assert enable_timing, "timing events must be created with enable_timing=True"

        def record(self, stream=None):
            assert stream == "stream-of-cuda:0"
            self.t = next(now)

        def synchronize(self):
            synced.append(self)

        def elapsed_time(self, end):
            return (end.t - self.t) * 1000.0  # milliseconds, like torch.cuda.Event

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream-of-{device}")
    timer = StepTimer("cuda:0", clock=lambda: pytest.fail("host clock read on a GPU"))
    for i in range(4):
        timer(None, i, 0, {})
    assert timer.clock_name == "cuda-events"
    assert timer.it_per_s() == pytest.approx(3 / 0.2)
    assert synced and synced[-1] is timer._stamps[-1]  # waited for the last step's event


# ---------------------------------------------------------------- a real tiny pipeline


@pytest.fixture(scope="module")
def tiny_sd():
    """A random-weight SD pipeline from diffusers-test-style dummy components (no tokenizer
    or text encoder: prompts are passed as embeddings)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=2)
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[4, 8], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe, steps=10, **kwargs):
    emb = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(0))
    return pipe(prompt_embeds=emb, negative_prompt_embeds=torch.zeros_like(emb), height=64, width=64,
                num_inference_steps=steps, guidance_scale=5.0, output_type="np",
                generator=torch.Generator().manual_seed(0), **kwargs)


def test_it_per_s_agrees_with_an_independent_timing_of_the_same_steps(tiny_sd, monkeypatch):
    """Step ends are stamped a second time, independently, by wrapping the scheduler's step
    (which runs right before callback_on_step_end); both rates must agree within 5%."""
    independent = []
    original = tiny_sd.scheduler.step

    def stamped_step(*args, **kwargs):
        out = original(*args, **kwargs)
        independent.append(time.perf_counter())
        return out

    monkeypatch.setattr(tiny_sd.scheduler, "step", stamped_step)
    _generate(tiny_sd, steps=2)  # warm-up call
    independent.clear()
    result = measure_generation(lambda cb: _generate(tiny_sd, steps=12, callback_on_step_end=cb), "cpu")
    reference = (len(independent) - 1) / (independent[-1] - independent[0])
    assert result["steps"] == len(independent) == 12
    assert result["it_per_s"] == pytest.approx(reference, rel=0.05)
    # the denoising window lies inside the end-to-end call
    assert result["e2e_s"] > (result["steps"] - 1) / result["it_per_s"]
    assert sum(result["step_s"]) == pytest.approx((result["steps"] - 1) / result["it_per_s"])


def test_user_callback_still_steers_a_real_pipeline(tiny_sd):
    calls = []

    def zero_latents_at_the_end(pipe, i, t, kwargs):
        calls.append(i)
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == 3 else kwargs

    plain = _generate(tiny_sd, steps=4).images
    output, result = measure_call(
        lambda cb: _generate(tiny_sd, steps=4, **cb.call_kwargs()), "cpu", user_callback=zero_latents_at_the_end)
    assert calls == [0, 1, 2, 3] and result["steps"] == 4
    assert not np.allclose(output.images, plain)  # the user's edit reached the pipeline


def test_measure_generation_is_json_ready_for_extra_info(tiny_sd):
    result = measure_generation(lambda cb: _generate(tiny_sd, steps=3, callback_on_step_end=cb), "cpu")
    for key in ("e2e_s", "it_per_s", "steps", "peak_mem_bytes", "peak_mem_api"):
        assert result[key] is not None, key
    assert result["steps"] == 3 and result["step_clock"] == "perf_counter"
    assert "RSS" in result["peak_mem_api"]
    json.dumps(result, allow_nan=False)


def test_a_dropped_step_callback_is_reported(tiny_sd):
    with pytest.raises(MeasurementError, match="callback_on_step_end was never called"):
        measure_generation(lambda cb: _generate(tiny_sd, steps=2), "cpu")


# ---------------------------------------------------------------- PeakMemory
def _fresh_pages(nbytes: int) -> mmap.mmap:
    """Anonymous pages that are new to the process, every one touched: RSS grows by nbytes.
    (np.ones may be served from heap pages an earlier test left resident, and then adds no RSS.)"""
    region = mmap.mmap(-1, nbytes)
    for offset in range(0, nbytes, mmap.PAGESIZE):
        region[offset] = 1
    return region



@pytest.mark.parametrize("use_hwm", [True, False])
def test_peak_memory_sees_a_known_buffer(use_hwm):
    with PeakMemory("cpu", use_hwm=use_hwm) as probe:
        buffer = _fresh_pages(256 * MiB)  # touched pages: 256 MiB of RSS
        time.sleep(0.05)  # the sampler-only probe needs the buffer alive for a few samples
        buffer.close()
    assert probe.peak_bytes == pytest.approx(256 * MiB, abs=16 * MiB)
    assert "RSS" in probe.api


def test_peak_memory_sees_a_short_spike_through_the_kernel_peak_mark():
    with PeakMemory("cpu", interval_s=10.0) as probe:  # the sampler will never run
        _fresh_pages(128 * MiB).close()
    if "VmHWM" not in probe.api:
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert probe.peak_bytes == pytest.approx(128 * MiB, abs=16 * MiB)


def test_peak_memory_of_an_empty_block_is_small():
    with PeakMemory("cpu") as probe:
        pass
    assert 0 <= probe.peak_bytes < 8 * MiB


def test_nested_probes_keep_the_outer_peak():
    with PeakMemory("cpu") as outer:
        _fresh_pages(128 * MiB).close()
        with PeakMemory("cpu") as inner:
            _fresh_pages(32 * MiB).close()
    assert inner.peak_bytes == pytest.approx(32 * MiB, abs=8 * MiB)
    assert outer.peak_bytes == pytest.approx(128 * MiB, abs=16 * MiB)


def test_peak_memory_on_cuda_resets_then_reads_the_allocator(monkeypatch):
    log = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: log.append("sync"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: log.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: log.append("allocated") or 1000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: log.append("max") or 5000)
    with PeakMemory("cuda:0") as probe:
        log.append("work")
    assert log == ["sync", "reset", "allocated", "work", "sync", "max"]
    assert (probe.peak_bytes, probe.peak_abs_bytes, probe.baseline_bytes) == (4000, 5000, 1000)
    assert probe.api == "torch.cuda.max_memory_allocated"


def test_peak_memory_read_too_early_is_an_error():
    with pytest.raises(MeasurementError, match="before the measured block ended"):
        PeakMemory("cpu").peak_bytes
