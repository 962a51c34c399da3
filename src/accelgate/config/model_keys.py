"""Every key of a `[tool.accelgate.model.ID]` table, in one place: its type, whether a new
model must give it, its default and what it means.

Users declaring a model of their own had to read config.py and models/ to learn which keys
exist; the required ones appeared only in an error. The loader's allowed keys are built from
this table (`MODEL_KEYS`, `GENERATION_KEYS`, `NEW_MODEL_REQUIRED`), and the README's table is
rendered from it (`python -m accelgate.config.model_keys`) and checked against it by a unit
test, so the documentation cannot drift from what the loader accepts.
"""
from __future__ import annotations

from dataclasses import dataclass

NEW = "new model"


@dataclass(frozen=True)
class Key:
    name: str
    type: type | tuple[type, ...]
    default: str
    meaning: str
    required: bool = False  # a model that is not in the catalog must give it (or its `either`)
    either: str | None = None  # the alternative that satisfies `required` as well
    generation: bool = False  # also allowed under [tool.accelgate.generation], for every model
    new_only: bool = False  # identity of a model: cannot be changed for a catalog model

    @property
    def type_name(self) -> str:
        kinds = self.type if isinstance(self.type, tuple) else (self.type,)
        if kinds == (int, float):
            return "number"
        return " or ".join({"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "list",
                            "dict": "table"}[k.__name__] for k in kinds)

    @property
    def required_text(self) -> str:
        if not self.required:
            return "-"
        text = f"{NEW}, or `{self.either}`" if self.either else NEW
        return text + " (or in `[generation]`)" if self.generation else text


KEYS: tuple[Key, ...] = (
    Key("pipeline_class", str, "-", "the diffusers pipeline class, e.g. `StableDiffusionPipeline`",
        required=True, new_only=True),
    Key("task", str, "-", "`text-to-image`, `image-to-image`, `edit` or `class-conditional`: which quality "
        "module runs it and what a prompt holds", required=True, new_only=True),
    Key("denoiser", str, "-", "`unet` or `transformer`: which backends serve it (DeepCache and tomesd need a UNet)",
        required=True, new_only=True),
    Key("path", str, "-", "a local diffusers pipeline directory (`save_pretrained` layout); relative to the config "
        "file's directory", required=True, either="repo_id"),
    Key("repo_id", str, "-", "a Hugging Face hub id, loaded offline from the local HF cache "
        "(`huggingface-cli download REPO_ID` first)", required=True, either="path", new_only=True),
    Key("gpu", bool, "false with `path` or for a built-in tiny model; true for a `repo_id` or a catalog real model",
        "marked `gpu` and skipped without CUDA; `gpu = false` runs it on CPU"),
    Key("resolutions", list, "the catalog's", "`[\"WIDTHxHEIGHT\", ...]`, multiples of 8", required=True),
    Key("steps", int, "the catalog's", "denoising steps (>= 1)", required=True, generation=True),
    Key("guidance_scale", (int, float), "the catalog's", "classifier-free guidance scale", required=True,
        generation=True),
    Key("prompt_set", str, "the catalog's", "an embedded prompt set by name (`parti-sample`, `diffusers-guide`, "
        "`imagenet-classes`, ...)", required=True, either="prompts", generation=True),
    Key("prompts", (list, str), "-", "the model's own prompts: an inline list of strings (class words for "
        "`class-conditional`; `{prompt = \"...\", image = \"in.png\"}` tables for `image-to-image` and `edit`), or "
        "the path of a `.txt` file (one prompt a line, `#` comments) or `.json` file (the same list), relative to "
        "the config file's directory; instead of `prompt_set`", required=True, either="prompt_set"),
    Key("prompt_limit", int, "every prompt (tiny models: 2)", "how many prompts of the set each case generates (>= 1)",
        generation=True),
    Key("seed", int, "0", "seed of the first image; image i uses seed + i (CPU generator)", generation=True),
    Key("scheduler", str, "the pipeline's own", "a diffusers scheduler class name, e.g. `DDIMScheduler`",
        generation=True),
    Key("dtype", str, "`float32` (real catalog models: `float16`)", "`float32`, `float16` or `bfloat16`: the "
        "weights' dtype for every backend", generation=True),
    Key("variant", str, "-", "the weights variant to load, e.g. `fp16`", new_only=True),
    Key("call_kwargs", dict, "{}", "extra keyword arguments of the pipeline call, checked against its `__call__`"),
    Key("allow_large", bool, "false", "allow resolutions over 4x the pixels of the model's largest native one"),
)

MODEL_KEYS = {key.name: key.type for key in KEYS}
GENERATION_KEYS = {key.name: key.type for key in KEYS if key.generation}
NEW_ONLY = tuple(key.name for key in KEYS if key.new_only)
NEW_MODEL_REQUIRED = tuple(key.name for key in KEYS if key.required and not key.either)
ALTERNATIVES = tuple(sorted({tuple(sorted((key.name, key.either))) for key in KEYS if key.either}))


def markdown_table() -> str:
    """The README's table of model keys, one row per key."""
    rows = ["| key | type | required | default | meaning |", "|---|---|---|---|---|"]
    rows += [f"| `{k.name}` | {k.type_name} | {k.required_text} | {k.default} | {k.meaning} |" for k in KEYS]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
