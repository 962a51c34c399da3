"""A model's own prompts, given in its config table (`prompts = [...]` or a file), no Python.

A prompt set of one's own used to need an undocumented `accelgate.prompts.register()` call in
a conftest. Now `prompts` takes an inline list or the path of a `.txt` / `.json` file, read
when the config is read, so an empty list, a non-string entry, a missing file or an input
image that is not there is a `ConfigError` naming the file, the table and the key before any
pipeline loads. What one entry holds depends on the model's task: a prompt (text-to-image),
a prompt with an input image (image-to-image, edit), or a class word or index
(class-conditional).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accelgate.config.schema import ConfigError, check_keys, read_utf8
from accelgate.prompts.sets import SAMPLE_IMAGES, PromptItem

ENTRY_KEYS = {"prompt": str, "negative_prompt": str, "image": str, "input_caption": str, "output_caption": str,
              "class_label": (str, int)}
FILE_SUFFIXES = (".txt", ".json")
IMAGE_TASKS = ("image-to-image", "edit")


def inline_name(model_id: str) -> str:
    """The prompt-set name a model's inline prompts are recorded under (manifests, reports)."""
    return f"[model.{model_id}] prompts"


def parse_prompts(value: Any, task: str, model_id: str, base: Path, place: str) -> tuple[str, tuple[PromptItem, ...]]:
    """(the set's name, its items) from a `prompts` value; `base` anchors relative paths."""
    key = f"{place}: prompts"
    if isinstance(value, str):
        path = _resolve(value, base)
        entries, name = _read_file(path, key), value
        key = f"{key} ({path})"
    else:  # a list: the schema's type check came first
        entries, name = value, inline_name(model_id)
    if not entries:
        raise ConfigError(f"{key}: no prompts; give at least one (or leave the key out for the model's prompt_set)")
    items = tuple(_item(entry, task, base, f"{key} #{i + 1}") for i, entry in enumerate(entries))
    return name, items


def _resolve(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _read_file(path: Path, key: str) -> list:
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise ConfigError(f"{key}: {path} is not a prompt file: use .txt (one prompt a line) or .json (a list)")
    text = read_utf8(path, f"{key}: the prompt file", " (a relative path is read from the config file's directory)")
    if path.suffix.lower() == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{key}: {path} is not valid JSON ({error})") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{key}: {path} must hold a JSON list of prompts, got {type(entries).__name__}")
    return entries


def _item(entry: Any, task: str, base: Path, key: str) -> PromptItem:
    if task == "class-conditional":
        if isinstance(entry, bool) or not isinstance(entry, (str, int)) or (isinstance(entry, str) and not entry.strip()):
            raise ConfigError(f"{key}: a class-conditional model takes an ImageNet class word or index, got {entry!r}")
        return PromptItem(class_label=entry.strip() if isinstance(entry, str) else entry)
    if isinstance(entry, str):
        if task in IMAGE_TASKS:
            raise ConfigError(f"{key}: an {task} model needs an input image with each prompt: write "
                              f'{{prompt = {entry!r}, image = "photo.png"}} (or a scikit-image sample: '
                              f"{', '.join(SAMPLE_IMAGES)})")
        entry = {"prompt": entry}
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{key}: a prompt is a string or a table with prompt = \"...\", got "
                          f"{type(entry).__name__} {entry!r}")
    check_keys(entry, ENTRY_KEYS, key)
    if not str(entry.get("prompt", "")).strip():
        raise ConfigError(f"{key}: the prompt is empty; write the text the pipeline is to draw")
    fields = dict(entry)
    if task in IMAGE_TASKS:
        if "image" not in entry:
            raise ConfigError(f"{key}: an {task} model needs image = \"photo.png\" with each prompt")
        fields["image"] = _image(entry["image"], base, key)
    return PromptItem(**fields)


def _image(name: str, base: Path, key: str) -> str:
    """A scikit-image sample name as it is, else a file path made absolute (cases may run elsewhere)."""
    if name in SAMPLE_IMAGES:
        return name
    path = _resolve(name, base)
    if not path.is_file():
        raise ConfigError(f"{key}: input image {path} does not exist; give an image file (relative to the config "
                          f"file's directory) or a scikit-image sample: {', '.join(SAMPLE_IMAGES)}")
    return str(path)
