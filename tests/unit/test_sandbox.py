"""The sandbox of process-wide state (issue 9): what a case changes is seen, named, restored; what
cannot be restored makes later cases its victims, naming the culprit."""
import random

import pytest
import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel

from accelgate.probes import Probe
from accelgate.sandbox import Sandbox


@pytest.fixture
def sandbox():
    box = Sandbox()
    outside, victim = box.begin([DiTTransformer2DModel])
    assert outside == [] and victim is None
    yield box
    box.end("cleanup")  # whatever a failing test left


def _texts(changes):
    return [c.text() for c in changes]


def test_a_patched_model_class_and_the_meta_default_device_are_named_and_restored(sandbox):
    original = DiTTransformer2DModel.forward

    def instrumented_forward(self, *args, **kwargs):
        return original(self, *args, **kwargs)

    DiTTransformer2DModel.forward = instrumented_forward
    torch.set_default_device("meta")
    changes = sandbox.end("tiny-dit/patch/32x32")
    texts = "\n".join(_texts(changes))
    assert "DiTTransformer2DModel.forward: DiTTransformer2DModel.forward (diffusers" in texts
    assert "-> test_a_patched_model_class_and_the_meta_default_device_are_named_and_restored.<locals>" \
           ".instrumented_forward (test_sandbox)" in texts
    assert "torch default device (torch.set_default_device): not set (cpu) -> 'meta'" in texts
    assert all(c.restored for c in changes)
    assert DiTTransformer2DModel.forward is original and torch.empty(1).device.type == "cpu"
    assert sandbox.begin() == ([], None)


def test_numerics_flags_sdpa_and_compiler_config_are_restored(sandbox):
    import torch._dynamo

    sdpa = F.scaled_dot_product_attention
    torch.backends.mkldnn.enabled = False
    torch.set_flush_denormal(True)
    torch.set_float32_matmul_precision("medium")
    F.scaled_dot_product_attention = lambda *args, **kwargs: None
    torch._dynamo.config.recompile_limit = 99
    texts = "\n".join(_texts(sandbox.end("case")))
    for expected in ("torch.backends.mkldnn.enabled: True -> False", "flush denormal (torch.set_flush_denormal): "
                     "False -> True", "float32 matmul precision: 'highest' -> 'medium'",
                     "torch.nn.functional.scaled_dot_product_attention: scaled_dot_product_attention",
                     "torch._dynamo.config.recompile_limit: 8 -> 99"):
        assert expected in texts, texts
    assert torch.backends.mkldnn.enabled and F.scaled_dot_product_attention is sdpa
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0 and torch.get_float32_matmul_precision() == "highest"
    assert torch._dynamo.config.recompile_limit == 8


def test_global_rngs_are_put_back_silently(sandbox):
    clean = torch.get_rng_state(), random.getstate()
    torch.manual_seed(123)
    random.seed(5)
    torch.rand(3)
    assert sandbox.end("tiny-dit/seeding/32x32") == []  # seeding or drawing is not a change worth a warning
    assert torch.equal(torch.get_rng_state(), clean[0]) and random.getstate() == clean[1]


def test_torch_compiles_own_first_use_patches_are_not_blamed(sandbox):
    compiled = torch.compile(torch.nn.Linear(4, 4), backend="eager")
    compiled(torch.randn(2, 4))
    assert sandbox.end("tiny-sd/torch-compile/32x32") == []


def test_what_cannot_be_restored_makes_the_next_case_a_victim_naming_the_culprit(sandbox):
    state = {"value": "clean"}
    sandbox._probes["a C-level setting"] = Probe("a C-level setting", lambda: state["value"], None)
    sandbox._clean["a C-level setting"] = "clean"
    state["value"] = "changed"
    changes = sandbox.end("tiny-dit/culprit/32x32")
    assert [c.text() for c in changes] == ["a C-level setting: 'clean' -> 'changed' (could NOT be restored)"]
    outside, victim = sandbox.begin()
    message = victim.message("tiny-dit/eager/32x32")
    assert "changed by tiny-dit/culprit/32x32 and not restorable from Python" in message
    assert "a C-level setting: 'clean' -> 'changed'" in message and "--accelgate-isolate" in message
    state["value"] = "clean"  # once it is back, nobody is a victim any more
    assert sandbox.begin() == ([], None)


def test_a_change_made_between_cases_is_restored_and_reported_as_outside(sandbox):
    sandbox.end("a")
    torch.set_default_dtype(torch.float64)
    outside, victim = sandbox.begin()
    assert victim is None and _texts(outside) == ["torch default dtype: torch.float32 -> torch.float64"]
    assert torch.get_default_dtype() == torch.float32
