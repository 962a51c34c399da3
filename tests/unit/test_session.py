"""The pytest-free core: one disk read per model, an independent copy per case, one place that
turns an exception into an outcome, and the device resolved only when a case needs it."""
from pathlib import Path

import pytest
import torch

import accelgate.models.loading as loading
from accelgate.config.load import build_config
from accelgate.config.schema import ConfigError
from accelgate.errors import CaseFailed, CaseUnavailable
from accelgate.session import Session, verdict_for_exception

CONFIG = {"models": ["tiny-dit", "tiny-sd"], "backends": ["eager"],
          "model": {"tiny-dit": {"resolutions": ["32x32"]}, "tiny-sd": {"resolutions": ["32x32"]}}}


@pytest.fixture
def session(tmp_path, monkeypatch):
    reads = []
    original = loading.load_pipeline

    def counting(spec, *args, **kwargs):
        reads.append(spec.id)
        return original(spec, *args, **kwargs)

    monkeypatch.setattr(loading, "load_pipeline", counting)
    s = Session(build_config(CONFIG, None, tmp_path), "cpu")
    s.reads = reads
    yield s
    s.close()


def _case(session, model):
    return next(c for c in session.matrix.cases if c.model.id == model)


def test_each_model_is_read_once_and_every_case_gets_an_independent_copy(session):
    dit = _case(session, "tiny-dit")
    first, second = session.load(dit), session.load(dit)
    assert session.reads == ["tiny-dit"]
    weight = next(first.transformer.parameters())
    with torch.no_grad():
        weight.add_(1.0)  # a backend that mutates weights
    assert not torch.equal(weight, next(second.transformer.parameters()))
    assert not torch.equal(weight, next(session.load(dit).transformer.parameters()))
    assert first.transformer is not second.transformer and first.scheduler is not second.scheduler
    session.load(_case(session, "tiny-sd"))
    assert session.reads == ["tiny-dit", "tiny-sd"]
    assert session.model_hashes["tiny-dit"] == session.model_hash(dit.model)


def test_tokenizers_are_shared_not_copied(session):
    sd = _case(session, "tiny-sd")
    a, b = session.load(sd), session.load(sd)
    assert a.tokenizer is b.tokenizer and a.text_encoder is not b.text_encoder


def test_exceptions_become_outcomes_in_one_place(session):
    case = _case(session, "tiny-dit")
    assert verdict_for_exception(case, CaseUnavailable("weights not found")).outcome == "skipped"
    assert verdict_for_exception(case, CaseUnavailable("x"), unavailable="failed").outcome == "failed"
    failed = verdict_for_exception(case, CaseFailed("degenerate output: image 0 is black"))
    assert failed.outcome == "failed" and failed.reason.startswith("degenerate output")
    try:
        raise RuntimeError("this backend crashed")
    except RuntimeError as error:
        crashed = verdict_for_exception(case, error)
    assert crashed.outcome == "error" and crashed.reason.startswith("RuntimeError at test_session.py:")


def test_cuda_without_a_gpu_is_a_config_error_naming_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    s = Session(build_config(CONFIG, None, tmp_path), "cuda")
    with pytest.raises(ConfigError, match="no CUDA device.*--device cpu"):
        s.device
