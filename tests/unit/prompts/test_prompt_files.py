"""Prompt-set loaders: HPD v2, COCO-30k captions, PartiPrompts, DrawBench, from files or the HF cache."""
from __future__ import annotations

import csv
import json

import pytest

from accelgate.prompts.files import (
    HPD_STYLES, PromptFileError, PromptFileMissing, load_coco30k, load_drawbench, load_hpdv2, load_partiprompts,
    load_prompt_file_set,
)
from accelgate.prompts.sets import PromptSet


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty HF hub cache; `add(repo, files)` fakes a cached dataset snapshot."""
    from huggingface_hub import constants

    root = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HPS_ROOT", str(tmp_path / "hpsv2"))

    def add(repo: str, files: dict[str, str]):
        base = root / f"datasets--{repo.replace('/', '--')}"
        (base / "refs").mkdir(parents=True)
        (base / "refs" / "main").write_text("0123abc")
        for name, text in files.items():
            path = base / "snapshots" / "0123abc" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")

    return add


def hpd_files(n=800) -> dict[str, str]:
    return {f"benchmark/{s}.json": json.dumps([f"{s} prompt {i}" for i in range(n)]) for s in HPD_STYLES}


def write_table(path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------ HPD v2
def test_hpdv2_full_set_from_the_hub_cache_is_3200_prompts_interleaved(hub):
    hub("zhwang/HPDv2", hpd_files())
    prompts = load_hpdv2()
    assert isinstance(prompts, PromptSet) and len(prompts.items) == 3200
    assert [i.style for i in prompts.items[:5]] == ["anime", "concept-art", "paintings", "photo", "anime"]
    assert prompts.items[5].prompt == "concept-art prompt 1"
    assert {s: sum(i.style == s for i in prompts.items) for s in HPD_STYLES} == dict.fromkeys(HPD_STYLES, 800)


def test_hpdv2_limit_keeps_styles_balanced(hub, tmp_path):
    for name, text in hpd_files(5).items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    prompts = load_hpdv2(tmp_path / "benchmark", limit=6)
    assert [i.style for i in prompts.items] == ["anime", "concept-art", "paintings", "photo", "anime", "concept-art"]
    assert "first 6 of 20" in prompts.description
    one = load_hpdv2(tmp_path / "benchmark" / "photo.json")
    assert {i.style for i in one.items} == {"photo"} and len(one.items) == 5
    assert len(load_hpdv2(tmp_path, styles=("anime",)).items) == 5


def test_hpdv2_from_the_hpsv2_cache(hub, tmp_path):
    bench = tmp_path / "hpsv2" / "datasets" / "benchmark"
    bench.mkdir(parents=True)
    for style in HPD_STYLES:
        (bench / f"{style}.json").write_text(json.dumps(["x", "y"]))
    assert len(load_hpdv2().items) == 8


@pytest.mark.parametrize("content, message", [
    (json.dumps({"prompts": ["a"]}), "got dict; expected a JSON list of prompt strings"),
    (json.dumps([{"prompt": "a"}]), "non-string entries"),
    ("[not json", "not valid JSON"),
])
def test_hpdv2_wrong_schema_names_the_file(tmp_path, content, message):
    for style in HPD_STYLES:
        (tmp_path / f"{style}.json").write_text(json.dumps(["ok"]))
    (tmp_path / "paintings.json").write_text(content)
    with pytest.raises(PromptFileError, match=message) as info:
        load_hpdv2(tmp_path)
    assert "paintings.json" in str(info.value)


def test_hpdv2_missing_files_say_how_to_fetch(hub, tmp_path):
    (tmp_path / "anime.json").write_text("[]")
    with pytest.raises(PromptFileMissing, match="concept-art.json"):
        load_hpdv2(tmp_path)
    with pytest.raises(PromptFileMissing, match='hf download zhwang/HPDv2 --repo-type dataset --include "benchmark/'):
        load_hpdv2()


# ------------------------------------------------------------------ COCO-30k
def test_coco_captions_from_csv_json_and_jsonl(tmp_path):
    rows = [["a dog", "1.jpg"], ["a cat", "2.jpg"], ["", "3.jpg"]]
    write_table(tmp_path / "captions.csv", ["caption", "file_name"], rows)
    assert [i.prompt for i in load_coco30k(tmp_path / "captions.csv").items] == ["a dog", "a cat"]
    (tmp_path / "c.json").write_text(json.dumps({"0": "first", "1": "second"}))
    assert [i.prompt for i in load_coco30k(tmp_path / "c.json").items] == ["first", "second"]
    (tmp_path / "d.json").write_text(json.dumps([{"caption": ["one", "alt"]}, {"caption": "two"}]))
    assert [i.prompt for i in load_coco30k(tmp_path / "d.json", limit=1).items] == ["one"]
    (tmp_path / "e.jsonl").write_text('{"caption": "x"}\n{"caption": "y"}\n')
    assert len(load_coco30k(tmp_path / "e.jsonl").items) == 2


def test_coco_wrong_column_names_file_column_and_schema(tmp_path):
    path = write_table(tmp_path / "bad.csv", ["text", "image"], [["a dog", "x"]])
    with pytest.raises(PromptFileError) as info:
        load_coco30k(path)
    text = str(info.value)
    assert "bad.csv" in text and "'caption'" in text and "found: 'text', 'image'" in text
    assert "sayakpaul/coco-30-val-2014" in text


def test_coco_parquet_shards_from_the_hub_cache(hub, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    hub("sayakpaul/coco-30-val-2014", {"README.md": "coco"})
    data = tmp_path / "hub" / "datasets--sayakpaul--coco-30-val-2014" / "snapshots" / "0123abc" / "data"
    data.mkdir()
    for shard, captions in enumerate((["c0", "c1"], ["c2"])):
        table = pa.table({"image": [{"bytes": b"", "path": ""}] * len(captions), "caption": captions})
        pq.write_table(table, data / f"train-0000{shard}-of-00002.parquet")
    assert [i.prompt for i in load_coco30k().items] == ["c0", "c1", "c2"]


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ModuleNotFoundError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    (tmp_path / "train.parquet").write_bytes(b"PAR1")
    with pytest.raises(PromptFileError, match="needs pyarrow"):
        load_coco30k(tmp_path / "train.parquet")


# ------------------------------------------------------------------ PartiPrompts
PARTI_HEADER = ["Prompt", "Category", "Challenge", "Note"]
PARTI_ROWS = [["a corgi", "Animals", "Basic", ""], ["a car with no windows", "Vehicles", "Imagination", ""],
              ["a cube made of porcupine", "Artifacts", "Imagination", "from the paper"]]


def test_parti_from_the_hub_cache_with_filters(hub, tmp_path):
    tsv = write_table(tmp_path / "PartiPrompts.tsv", PARTI_HEADER, PARTI_ROWS, delimiter="\t")
    hub("nateraw/parti-prompts", {"PartiPrompts.tsv": tsv.read_text(encoding="utf-8")})
    prompts = load_partiprompts()
    assert [i.prompt for i in prompts.items] == [r[0] for r in PARTI_ROWS] and prompts.items[0].style == "Animals"
    assert [i.prompt for i in load_partiprompts(challenge="Imagination").items] == [r[0] for r in PARTI_ROWS[1:]]
    assert len(load_prompt_file_set("partiprompts", tsv, limit=2).items) == 2


def test_parti_wrong_schema(tmp_path):
    path = write_table(tmp_path / "PartiPrompts.tsv", ["prompt", "category"], [["a corgi", "Animals"]], "\t")
    with pytest.raises(PromptFileError, match=r"no 'Prompt' column.*Prompt, Category, Challenge, Note"):
        load_partiprompts(path)


# ------------------------------------------------------------------ DrawBench
def test_drawbench_csv_and_category(tmp_path):
    path = write_table(tmp_path / "drawbench.csv", ["Prompts", "Category"],
                       [["A red colored car.", "Colors"], ["A black colored car.", "Colors"],
                        ["Two cats and one dog.", "Counting"], ["", ""]])
    prompts = load_drawbench(path)
    assert len(prompts.items) == 3 and prompts.items[2].style == "Counting"
    assert [i.prompt for i in load_drawbench(path, category="Counting").items] == ["Two cats and one dog."]


def test_drawbench_wrong_column_and_missing_set(hub, tmp_path):
    path = write_table(tmp_path / "db.csv", ["Prompt", "Category"], [["x", "y"]])
    with pytest.raises(PromptFileError, match=r"db.csv: no 'Prompts' column \(found: 'Prompt', 'Category'\)"):
        load_drawbench(path)
    with pytest.raises(PromptFileMissing, match="hf download sayakpaul/drawbench --repo-type dataset"):
        load_drawbench()
    with pytest.raises(PromptFileMissing, match="does not exist"):
        load_drawbench(tmp_path / "nope.csv")


def test_limit_and_dispatch_errors(tmp_path):
    path = write_table(tmp_path / "drawbench.csv", ["Prompts", "Category"], [["a", "b"]])
    with pytest.raises(ValueError, match="prompt limit must be >= 1"):
        load_drawbench(path, limit=0)
    with pytest.raises(KeyError, match="known: hpdv2, coco30k, partiprompts, drawbench"):
        load_prompt_file_set("laion", path)


def test_a_prompt_file_that_is_not_utf8_names_the_file_and_the_byte(tmp_path):
    path = tmp_path / "drawbench.csv"
    path.write_bytes("Prompts,Category\ncaf\xe9 on a table,Colors\n".encode("latin-1"))
    with pytest.raises(PromptFileError, match=r"drawbench.csv is not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        load_drawbench(path)
