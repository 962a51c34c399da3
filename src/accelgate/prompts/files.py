"""Large prompt sets read from local files or the Hugging Face hub cache (never downloaded).

Each loader takes a file or a directory (`source`), or None to look in the hub cache, and
returns a `PromptSet`; `limit` keeps the first N items (the `--prompt-limit` subset). A file
whose schema is wrong raises `PromptFileError` naming the file, what is missing and the
expected schema; a set that is not on the machine raises `PromptFileMissing` with the
command that fetches it on a connected machine. Schemas, as published:

- HPD v2 benchmark (hub dataset zhwang/HPDv2, `benchmark/{anime,concept-art,paintings,photo}.json`,
  also hpsv2's `$HPS_ROOT/datasets/benchmark/`): each file a JSON list of 800 prompt strings
  (hpsv2's `BenchmarkDataset` indexes it). Items carry `style`; they are interleaved
  (anime[0], concept-art[0], paintings[0], photo[0], anime[1], ...) so that any limit keeps
  the four styles balanced.
- COCO-30k captions (hub dataset sayakpaul/coco-30-val-2014, `data/train-*.parquet`, columns
  `image` and `caption`): parquet shards (needs pyarrow), or CSV / JSON with a `caption`
  (or `captions`) column; JSON may also be a list of strings or an {id: caption} object.
  A list-valued caption uses its first entry. Rows keep file order, shards sorted by name.
- PartiPrompts (`PartiPrompts.tsv` from google-research/parti, hub dataset nateraw/parti-prompts):
  tab-separated with header `Prompt  Category  Challenge  Note`; `Prompt` is required;
  `Category` becomes the item's `style` (its grouping label) and can be filtered on.
- DrawBench (hub dataset sayakpaul/drawbench; the Imagen sheet exported as CSV): columns
  `Prompts` (plural, as published) and `Category`; CSV or parquet.
Blank prompts (empty trailing rows of exported sheets) are skipped.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

from accelgate.errors import CaseFailed, CaseUnavailable
from accelgate.hub import hub_cache_dir
from accelgate.prompts.sets import PromptItem, PromptSet

HPD_STYLES = ("anime", "concept-art", "paintings", "photo")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".json", ".jsonl")


class PromptFileError(CaseFailed, ValueError):
    """A prompt file exists but does not have the expected schema."""


class PromptFileMissing(CaseUnavailable, FileNotFoundError):
    """A prompt set is not on this machine: the message says where to put it and how to fetch it."""


_HUB = {
    "hpdv2": ("zhwang/HPDv2", 'hf download zhwang/HPDv2 --repo-type dataset --include "benchmark/*.json"'),
    "coco30k": ("sayakpaul/coco-30-val-2014",
                "hf download sayakpaul/coco-30-val-2014 --repo-type dataset  # parquet with images, ~5 GB"),
    "partiprompts": ("nateraw/parti-prompts", "hf download nateraw/parti-prompts PartiPrompts.tsv --repo-type dataset"
                     "  (or curl -LO https://raw.githubusercontent.com/google-research/parti/main/PartiPrompts.tsv)"),
    "drawbench": ("sayakpaul/drawbench", "hf download sayakpaul/drawbench --repo-type dataset"),
}


def _hub_snapshot(repo: str) -> Path | None:
    """The cached snapshot directory of a hub dataset, or None; `local_files_only` never connects."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, repo_type="dataset", local_files_only=True, cache_dir=hub_cache_dir()))
    except Exception:  # LocalEntryNotFoundError and friends: simply not cached
        return None


def _locate(kind: str, source) -> Path:
    if source is not None:
        path = Path(source).expanduser()
        if not path.exists():
            raise PromptFileMissing(f"{kind}: {path} does not exist (the configured prompt file or directory)")
        return path
    repo, fetch = _HUB[kind]
    snapshot = _hub_snapshot(repo)
    if snapshot is None and kind == "hpdv2":
        from accelgate.metrics.weights import hpsv2_root

        bench = hpsv2_root() / "datasets" / "benchmark"
        if bench.is_dir():
            return bench
    if snapshot is None:
        extra = " or hpsv2's $HPS_ROOT/datasets/benchmark" if kind == "hpdv2" else ""
        raise PromptFileMissing(f"{kind}: no local copy; give its file or directory in the config, or put hub dataset "
                                f"{repo} in the HF cache {hub_cache_dir()} ($HF_HUB_CACHE / $HF_HOME){extra}. "
                                f"On a connected machine: {fetch}")
    return snapshot


def _table_files(kind: str, path: Path, suffixes=TABLE_SUFFIXES) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise PromptFileMissing(f"{kind}: {path} holds no {'/'.join(suffixes)} file")
    return files


def _read_utf8(path: Path) -> str:
    """A prompt file's text; not UTF-8 is a PromptFileError naming the file and the byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise PromptFileError(f"{path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
                              "save it as UTF-8") from None


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a CSV / TSV / parquet / JSON table."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(_read_utf8(path), newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        rows = list(reader)
        return list(reader.fieldnames or []), rows
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ModuleNotFoundError:
            raise PromptFileError(f"{path}: reading parquet needs pyarrow (pip install pyarrow), "
                                  "or export the prompt column to CSV/JSON") from None
        table = pq.ParquetFile(path)
        names = table.schema_arrow.names
        text_columns = [n for n in names if n != "image"]  # never decode the embedded images
        rows = table.read(columns=text_columns).to_pylist()
        return names, rows
    if suffix in (".json", ".jsonl"):
        try:
            if suffix == ".jsonl":
                data = [json.loads(line) for line in _read_utf8(path).splitlines() if line.strip()]
            else:
                data = json.loads(_read_utf8(path))
        except json.JSONDecodeError as error:
            raise PromptFileError(f"{path}: not valid JSON ({error})") from None
        if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
            return ["caption"], [{"caption": v} for v in data.values()]
        if isinstance(data, list) and all(isinstance(v, str) for v in data):
            return ["caption"], [{"caption": v} for v in data]
        if isinstance(data, list) and all(isinstance(v, dict) for v in data):
            columns = list(dict.fromkeys(k for row in data for k in row))
            return columns, data
        raise PromptFileError(f"{path}: expected a JSON list of objects, a list of strings or an {{id: text}} object, "
                              f"got {type(data).__name__}")
    raise PromptFileError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(TABLE_SUFFIXES)}")


def _column(path: Path, columns: list[str], wanted: tuple[str, ...], schema: str) -> str:
    for name in wanted:
        if name in columns:
            return name
    raise PromptFileError(f"{path}: no {' or '.join(repr(w) for w in wanted)} column (found: "
                          f"{', '.join(map(repr, columns)) or 'none'}); expected schema: {schema}")


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return "" if value is None else str(value).strip()


def _finish(name: str, items: list[PromptItem], limit: int | None, description: str, source: Path) -> PromptSet:
    if not items:
        raise PromptFileError(f"{name}: {source} yielded no prompts")
    total = len(items)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"prompt limit must be >= 1, got {limit}")
        items = items[:limit]
        if len(items) < total:
            description += f" (first {len(items)} of {total})"
    return PromptSet(name, tuple(items), description, str(source))


# ---------------------------------------------------------------- the four sets
HPD_SCHEMA = "a JSON list of prompt strings per style file ({style}.json, 800 each)"


def load_hpdv2(source=None, *, styles: tuple[str, ...] = HPD_STYLES, limit: int | None = None) -> PromptSet:
    """HPD v2's benchmark prompts (4 styles x 800 = 3,200), interleaved across styles."""
    unknown = [s for s in styles if s not in HPD_STYLES]
    if unknown or not styles:
        raise ValueError(f"HPD v2 styles {unknown or styles}; known: {', '.join(HPD_STYLES)}")
    root = _locate("hpdv2", source)
    per_style: dict[str, list[str]] = {}
    if root.is_file():
        if root.stem not in HPD_STYLES:
            raise PromptFileError(f"{root}: an HPD v2 style file is named after its style ({', '.join(HPD_STYLES)})")
        styles = (root.stem,)
        files = {root.stem: root}
    else:
        base = root / "benchmark" if (root / "benchmark").is_dir() else root
        files = {s: base / f"{s}.json" for s in styles}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise PromptFileMissing(f"hpdv2: missing style files {missing}; expected {HPD_SCHEMA}. "
                                    f"On a connected machine: {_HUB['hpdv2'][1]}")
    for style, path in files.items():
        try:
            data = json.loads(_read_utf8(path))
        except json.JSONDecodeError as error:
            raise PromptFileError(f"{path}: not valid JSON ({error}); expected {HPD_SCHEMA}") from None
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            kind = type(data).__name__ if not isinstance(data, list) else "a list with non-string entries"
            raise PromptFileError(f"{path}: got {kind}; expected {HPD_SCHEMA}")
        per_style[style] = [p.strip() for p in data if p.strip()]
    items = []
    for i in range(max(len(v) for v in per_style.values())):
        for style in styles:
            if i < len(per_style[style]):
                items.append(PromptItem(prompt=per_style[style][i], style=style))
    counts = ", ".join(f"{s} {len(per_style[s])}" for s in styles)
    return _finish("hpdv2", items, limit, f"HPD v2 benchmark prompts ({counts}), styles interleaved", root)


def load_coco30k(source=None, *, limit: int | None = None) -> PromptSet:
    """COCO-2014 val 30k captions (the FID-30k protocol's prompts), in file order."""
    root = _locate("coco30k", source)
    schema = "column 'caption' (sayakpaul/coco-30-val-2014: image, caption) in parquet/CSV/JSON"
    items = []
    for path in _table_files("coco30k", root, (".parquet", ".csv", ".json", ".jsonl")):
        columns, rows = _read_rows(path)
        col = _column(path, columns, ("caption", "captions"), schema)
        items.extend(PromptItem(prompt=t) for t in (_text(r.get(col)) for r in rows) if t)
    return _finish("coco30k", items, limit, "COCO-2014 val 30k captions", root)


def load_partiprompts(source=None, *, limit: int | None = None, category: str | None = None,
                      challenge: str | None = None) -> PromptSet:
    """PartiPrompts (1,632 prompts); `style` holds the Category; optional Category/Challenge filters."""
    root = _locate("partiprompts", source)
    path = root if root.is_file() else root / "PartiPrompts.tsv"
    if not path.is_file():
        path = _table_files("partiprompts", root, (".tsv", ".csv", ".parquet"))[0]
    schema = "TSV with header Prompt, Category, Challenge, Note (google-research/parti PartiPrompts.tsv)"
    columns, rows = _read_rows(path)
    col = _column(path, columns, ("Prompt",), schema)
    for name, value in (("Category", category), ("Challenge", challenge)):
        if value is not None:
            _column(path, columns, (name,), schema)
            rows = [r for r in rows if _text(r.get(name)) == value]
    items = [PromptItem(prompt=_text(r.get(col)), style=_text(r.get("Category"))) for r in rows if _text(r.get(col))]
    what = "PartiPrompts" + "".join(f", {k}={v}" for k, v in (("Category", category), ("Challenge", challenge)) if v)
    return _finish("partiprompts", items, limit, what, path)


def load_drawbench(source=None, *, limit: int | None = None, category: str | None = None) -> PromptSet:
    """DrawBench (200 prompts, 11 categories); `style` holds the Category."""
    root = _locate("drawbench", source)
    schema = "columns Prompts, Category (the Imagen DrawBench sheet; sayakpaul/drawbench)"
    items = []
    for path in _table_files("drawbench", root, (".csv", ".tsv", ".parquet")):
        columns, rows = _read_rows(path)
        col = _column(path, columns, ("Prompts",), schema)
        if category is not None:
            _column(path, columns, ("Category",), schema)
            rows = [r for r in rows if _text(r.get("Category")) == category]
        items.extend(PromptItem(prompt=_text(r.get(col)), style=_text(r.get("Category")))
                     for r in rows if _text(r.get(col)))
    return _finish("drawbench", items, limit, "DrawBench" + (f", Category={category}" if category else ""), root)


LOADERS: dict[str, Callable[..., PromptSet]] = {
    "hpdv2": load_hpdv2,
    "coco30k": load_coco30k,
    "partiprompts": load_partiprompts,
    "drawbench": load_drawbench,
}


def load_prompt_file_set(name: str, source=None, limit: int | None = None) -> PromptSet:
    """Dispatch by set name (`hpdv2`, `coco30k`, `partiprompts`, `drawbench`)."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise KeyError(f"unknown file-backed prompt set {name!r}; known: {', '.join(LOADERS)}") from None
    return loader(source, limit=limit)
