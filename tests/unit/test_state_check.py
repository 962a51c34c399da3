"""A -> B -> A (issue 10, item 5, first half): a backend that keeps state from one pipeline call
into the next fails; every built-in backend that does not compile passes (the default run)."""
from accelgate.config.load import build_config
from accelgate.quality.run import QualityRun
from accelgate.session import Session
from accelgate.state_check import other_resolution, wants_state_check


def _verdicts(tmp_path, backends, tables):
    """Every case's verdict against baselines this test writes first (the committed ones are
    tied to the CI's library versions)."""
    raw = {"models": ["tiny-sd"], "backends": ["eager", *backends], "backend": tables}
    session = Session(build_config(raw, None, tmp_path), device="cpu")
    regen = QualityRun(session, tmp_path / "baselines", regen=True)
    assert all(regen.evaluate(c).passed for c in session.matrix.cases if c.reference)
    run = QualityRun(session, tmp_path / "baselines")
    return {c.id: run.evaluate(c) for c in session.matrix.cases if not c.reference}


def test_it_runs_once_per_model_and_backend_and_never_on_the_reference_or_a_compiler(tmp_path):
    raw = {"models": ["tiny-sd"], "backends": ["eager", "channels-last", "torch-compile"]}
    session = Session(build_config(raw, None, tmp_path), device="cpu")
    carrying = sorted(c.id for c in session.matrix.cases if wants_state_check(c))
    assert carrying == ["tiny-sd/channels-last/32x32"]
    assert other_resolution(next(c for c in session.matrix.cases if c.id == carrying[0])) == (64, 64)


def test_state_carried_into_the_next_call_fails_though_the_images_pass(tmp_path):
    verdicts = _verdicts(tmp_path, ["channels-last", "accumulating"],
                         {"accumulating": {"factory": "fixtures.example_backends:accumulating"}})
    clean = verdicts["tiny-sd/channels-last/32x32"]
    assert clean.passed and clean.checks[-1].metric == "state_leak" and clean.checks[-1].value == 0
    leaky = verdicts["tiny-sd/accumulating/32x32"]
    leak = leaky.checks[-1]
    assert leak.metric == "state_leak" and not leak.passed and leak.value >= 1
    assert all(c.passed for c in leaky.checks[:-1]), leaky.message  # the images alone would pass it
    assert leaky.outcome == "failed"
    assert "state leaks between calls: after one call at 64x64 with a batch of 2" in leaky.reason
    assert "accumulating keeps state from one pipeline call into the next" in leaky.reason
    assert all(c.metric != "state_leak" for c in verdicts["tiny-sd/accumulating/64x64"].checks)
