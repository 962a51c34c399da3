"""Your own model in minutes (issue 12, item 1): every model key in one README table that is
the loader's schema, `gpu` inferred from the source, a gpu skip that says how to run on CPU,
and prompts given in the config (inline or a file) without any Python."""
import json
import re
import sys
from pathlib import Path

import pytest

from accelgate.config.load import MODEL_KEYS, build_config
from accelgate.config.model_keys import KEYS, markdown_table
from accelgate.config.schema import ConfigError
from accelgate.generate import generation_settings, prompt_items
from accelgate.session import Session

REPO = Path(__file__).resolve().parents[3]
NEW = {"pipeline_class": "StableDiffusionPipeline", "task": "text-to-image", "denoiser": "unet",
       "resolutions": ["64x64"], "steps": 4, "guidance_scale": 5.0}


def _build(tmp_path, name="accelgate.toml", **raw):
    source = tmp_path / name
    return build_config(raw, source, tmp_path)


def _model(tmp_path, model_id="mine", **table):
    return _build(tmp_path, models=[model_id], model={model_id: table}).models[0]


def _refused(tmp_path, match, **table):
    with pytest.raises(ConfigError, match=match) as error:
        _model(tmp_path, **table)
    message = str(error.value)
    assert str(tmp_path / "accelgate.toml") in message and "[model.mine]" in message
    return message


# ------------------------------------------------------------------ the table of model keys
def test_the_readme_table_is_the_loaders_schema():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- model-keys:[^\n]*-->\n(.*?)<!-- /model-keys -->", readme, re.S)
    assert block, "README.md lost its model-keys table"
    assert block.group(1) == markdown_table(), "README's model keys drifted: paste `python -m accelgate.config.model_keys`"
    listed = re.findall(r"^\| `(\w+)` \|", block.group(1), re.M)
    assert sorted(listed) == sorted(MODEL_KEYS) and len(listed) == len(MODEL_KEYS)


def test_every_key_of_the_table_is_accepted_and_an_unlisted_one_refused(tmp_path):
    (tmp_path / "weights").mkdir()
    values = {"path": "weights", "repo_id": "me/model", "gpu": False, "prompt_set": "parti-sample",
              "prompt_limit": 1, "seed": 3, "scheduler": "DDIMScheduler", "dtype": "float32", "variant": "fp16",
              "call_kwargs": {"eta": 0.0}, "allow_large": True, **NEW}
    with_set = {k.name: values[k.name] for k in KEYS if k.name != "prompts"}
    assert _model(tmp_path, **with_set).seed == 3
    with_prompts = {**{k: v for k, v in with_set.items() if k != "prompt_set"}, "prompts": ["a red cube"]}
    assert [i.prompt for i in prompt_items(_model(tmp_path, **with_prompts))] == ["a red cube"]
    _refused(tmp_path, r"unknown key 'prompt'", prompt="a red cube", path="weights", **NEW)


def test_a_new_model_missing_keys_is_told_each_of_them(tmp_path):
    message = _refused(tmp_path, r"to declare a new one also give", steps=4)
    for needed in ("pipeline_class", "task", "denoiser", "resolutions", "guidance_scale", "path or repo_id",
                   "prompt_set or prompts"):
        assert needed in message
    assert "steps," not in message and "README" in message


# ------------------------------------------------------------------ where it runs
def test_gpu_follows_the_source_unless_the_table_says(tmp_path):
    assert not _model(tmp_path, path="weights", prompts=["a"], **NEW).gpu  # a local directory runs on CPU
    assert _model(tmp_path, path="weights", prompts=["a"], gpu=True, **NEW).gpu
    assert _model(tmp_path, repo_id="me/model", prompts=["a"], **NEW).gpu  # a hub model is a real one
    assert not _model(tmp_path, repo_id="me/model", prompts=["a"], gpu=False, **NEW).gpu
    assert not _model(tmp_path, "tiny-sd").gpu and _model(tmp_path, "sd15").gpu
    assert not _model(tmp_path, "sd15", gpu=False).gpu  # the catalog's real models can run on CPU when asked
    with pytest.raises(ConfigError, match="repo_id cannot be changed for catalog model 'sd15'"):
        _model(tmp_path, "sd15", repo_id="me/other")


def test_a_relative_path_is_read_from_the_config_files_directory(tmp_path):
    config = _build(tmp_path, models=["mine"], model={"mine": {"path": "models/mine", "prompts": ["a"], **NEW}})
    assert config.model_paths["mine"] == str(tmp_path / "models" / "mine")
    assert config.models[0].repo_id == str(tmp_path / "models" / "mine")


@pytest.mark.parametrize("name, table", [("pyproject.toml", "[tool.accelgate.model.mine]"),
                                         ("accelgate.toml", "[model.mine]")])
def test_a_gpu_skip_says_how_to_run_on_cpu_and_what_it_costs(tmp_path, name, table):
    config = _build(tmp_path, name, models=["mine"],
                    model={"mine": {"path": "weights", "gpu": True, "dtype": "float16", "prompts": ["a"], **NEW}})
    session = Session(config, "cpu")
    reason = session.skip_reason(session.matrix.cases[0])
    assert "mine is marked gpu and needs a CUDA device (running on cpu)" in reason and "--device cuda" in reason
    assert f'gpu = false and dtype = "float32"' in reason and f"under {table} of {tmp_path / name}" in reason
    assert "minutes per image" in reason and "baselines of their own" in reason


def test_a_path_model_without_weights_says_to_write_them_there_not_to_download(tmp_path):
    config = _build(tmp_path, models=["mine"], model={"mine": {"path": "weights", "prompts": ["a"], **NEW}})
    session = Session(config, "cpu")
    reason = session.skip_reason(session.matrix.cases[0])
    assert "has no model_index.json" in reason and "save_pretrained" in reason and "huggingface-cli" not in reason


# ------------------------------------------------------------------ prompts in the config
def test_inline_prompts_replace_the_named_set_and_are_recorded(tmp_path):
    model = _model(tmp_path, "tiny-sd", prompts=["a red cube", "a lighthouse at dusk", "a bowl of soup"],
                   prompt_limit=2)
    assert [i.prompt for i in prompt_items(model)] == ["a red cube", "a lighthouse at dusk"]
    assert generation_settings(model)["prompt_set"] == "[model.tiny-sd] prompts"


def test_a_prompt_file_txt_or_json(tmp_path):
    (tmp_path / "prompts.txt").write_text("# my prompts\na red cube\n\n  a lighthouse at dusk  \n", encoding="utf-8")
    model = _model(tmp_path, "tiny-sd", prompts="prompts.txt")
    assert [i.prompt for i in prompt_items(model)] == ["a red cube", "a lighthouse at dusk"]
    assert model.prompt_set == "prompts.txt"
    (tmp_path / "edits.json").write_text(json.dumps([{"prompt": "make it snow", "image": "astronaut"}]))
    edit = _model(tmp_path, "tiny-pix2pix", prompts="edits.json")
    assert prompt_items(edit)[0].image == "astronaut" and prompt_items(edit)[0].prompt == "make it snow"


def test_each_task_gets_what_its_prompts_hold(tmp_path):
    dit = _model(tmp_path, "tiny-dit", prompts=["tench", 207])
    assert [i.class_label for i in prompt_items(dit)] == ["tench", 207]
    (tmp_path / "street.png").write_bytes(b"not checked here")
    img2img = _model(tmp_path, "tiny-sd-img2img", prompts=[{"prompt": "make it snow", "image": "street.png"}])
    assert prompt_items(img2img)[0].image == str(tmp_path / "street.png")  # absolute: cases may run elsewhere


@pytest.mark.parametrize("value, match", [
    ([], r"prompts: no prompts; give at least one"),
    (["a red cube", 3], r"prompts #2: a prompt is a string or a table with prompt = .*got int 3"),
    ([{"prompt": ""}], r"prompts #1: the prompt is empty"),
    ([{"prompt": "a", "imgae": "x.png"}], r"prompts #1: unknown key 'imgae'"),
    ("missing.txt", r"prompts: the prompt file .*missing.txt does not exist \(a relative path is read from the config"),
    ("prompts.csv", r"is not a prompt file: use .txt"),
    (7, r"key 'prompts' must be a list or str, got int 7"),
])
def test_bad_prompts_are_config_errors_naming_file_table_and_key(tmp_path, value, match):
    _refused(tmp_path, match, path="weights", prompts=value, **NEW)


def test_bad_prompts_per_task_and_files(tmp_path):
    pix = {**NEW, "task": "edit", "pipeline_class": "StableDiffusionInstructPix2PixPipeline", "path": "weights"}
    _refused(tmp_path, r"prompts #1: an edit model needs an input image with each prompt", prompts=["snow"], **pix)
    _refused(tmp_path, r"input image .*nowhere.png does not exist", prompts=[{"prompt": "a", "image": "nowhere.png"}],
             **pix)
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    _refused(tmp_path, r"empty.txt\): no prompts", prompts="empty.txt", path="weights", **NEW)
    (tmp_path / "bad.json").write_text('{"a": 1}')
    _refused(tmp_path, r"bad.json must hold a JSON list", prompts="bad.json", path="weights", **NEW)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    _refused(tmp_path, r"latin1.txt is not UTF-8 text \(byte 0xe9", prompts="latin1.txt", path="weights", **NEW)
    _refused(tmp_path, r"gives both prompts and prompt_set", prompts=["a"], prompt_set="sd2", path="weights", **NEW)
    _refused(tmp_path, r"unknown prompt_set 'mine'.*or give the model's own prompts", prompt_set="mine",
             path="weights", **NEW)


@pytest.fixture
def example_on_path(monkeypatch):
    """examples/my-project on sys.path as its `pythonpath = ["."]` puts it, and its `my_accel`
    package dropped from sys.modules afterwards: a later test's own my_accel must not find it."""
    example = REPO / "examples" / "my-project"
    monkeypatch.syspath_prepend(str(example))
    yield example
    for name in [n for n in sys.modules if n == "my_accel" or n.startswith("my_accel.")]:
        del sys.modules[name]


def test_the_example_projects_config_declares_its_model_backend_and_prompts_without_code(example_on_path):
    from accelgate.config.find import find_config

    example = example_on_path
    found = find_config(example, None)
    config = build_config(found.raw, found.source, example)
    (model,) = config.models
    assert model.id == "my-sd" and not model.gpu and config.model_paths["my-sd"] == str(example / "models" / "my-sd")
    assert [i.prompt for i in prompt_items(model)] == ["a red cube on a wooden table", "a lighthouse at dusk, oil painting"]
    assert config.backend("my-channels-last").spec.user and config.baseline_dir == example / "baselines"
