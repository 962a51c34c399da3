"""The one report writer: results.json (the interface) first, summary.md rendered from it.

Each gate hands in its part (cases plus whatever its tables need, all JSON); the writer
merges them, with the report already in the directory when its run metadata matches, and
writes results.json and summary.md once, each atomically. Because summary.md is rendered
from the merged JSON only, a second run into the same directory (`pytest -m benchmark
--quality-report=out` after `pytest -m quality --quality-report=out`) keeps the first run's
cases and tables, and `-n 2` workers' parts (sent to the controller) give the same report
as a serial run.

**Merge rule.** A report directory holds the cases of runs that are comparable: same device
class, same accelgate config (the parsed tables, hashed) and same torch / diffusers /
transformers / accelgate versions. A later run merges by case id: a case it ran replaces
the stored one, the others stay, and every case keeps the `run_id` of the run that made it;
the header lists the runs. A run whose metadata differs is refused before it starts, naming
the field, so a report never silently mixes machines or configs.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from accelgate.report.markdown import counts_text
from accelgate.report.overview import failures_markdown, reasons_markdown
from accelgate.report.sections import Part, ordered
from accelgate.verdict import count_outcomes

SCHEMA_VERSION = 2
MATCHED_FIELDS = ("device_class", "config_sha256", "versions")  # must agree for two runs to share a report
MIN_FREE_BYTES = 64 * 2**20  # a report with its PNGs needs room; less than this fails at the start, not the end


class ReportConflict(Exception):
    """The report directory holds a run that cannot be merged with this one; the message names why."""


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def atomic_write_text(path: Path, text: str | bytes) -> None:
    """Write beside, then rename: a reader sees the old file or the new one, never half of one.
    The file gets the mode a plain open() would give (0666 minus the umask), not mkstemp's 0600,
    so a CI artifact reader under another user can read it. Bytes (a plot) are written as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(text if isinstance(text, bytes) else text.encode("utf-8"))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def check_writable(directory: Path) -> None:
    """At session start: the report directory can be created and written, and has room.
    Found only at the end (after a long run), an unwritable or full directory turned passing
    cases into failures and hid their messages."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ReportConflict(f"{directory} is a file, not a directory; give a directory for the report")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".accelgate-write-check-", dir=directory)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(b"\0" * 65536)
                stream.flush()
                os.fsync(stream.fileno())
        finally:
            Path(probe).unlink(missing_ok=True)
    except OSError as error:
        what = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        raise ReportConflict(f"cannot write the report there ({what}: {error.filename or directory}); "
                             "give a writable directory") from None
    free = shutil.disk_usage(directory).free
    if free < MIN_FREE_BYTES:
        raise ReportConflict(f"only {free / 2**20:.1f} MiB free on its disk; a report with its images needs at "
                             f"least {MIN_FREE_BYTES // 2**20} MiB: free some space or write it elsewhere")


def read_results(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / "results.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReportConflict(f"{path} is unreadable ({error}); write the report to another directory or remove "
                             "the file") from None


def check_mergeable(directory: Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The stored results this run may merge into (None: none stored), or ReportConflict."""
    stored = read_results(directory)
    if stored is None:
        return None
    path = Path(directory) / "results.json"
    if stored.get("schema_version") != SCHEMA_VERSION or not isinstance(stored.get("run"), dict):
        raise ReportConflict(
            f"{path} was written by another accelgate report format (schema_version "
            f"{stored.get('schema_version')!r}, this one writes {SCHEMA_VERSION}); write the report to another "
            "directory or remove the old one")
    for field in MATCHED_FIELDS:
        old, new = stored["run"].get(field), run.get(field)
        if old != new:
            if isinstance(old, dict) and isinstance(new, dict):
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                detail = "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} here" for k in diff)
            else:
                detail = f"{old!r} there, {new!r} here"
            raise ReportConflict(
                f"{path} holds cases of a run with another {field} ({detail}; its config: "
                f"{stored['run'].get('config')}): runs are merged into one report only when device class, config "
                "and versions match. Write this run's report to another directory or remove the old one")
    return stored


def _merge_lists(old: list, new: list) -> list:
    """Merge by `id` when the items have one (new wins, old order first), else a plain union."""
    if all(isinstance(item, dict) and "id" in item for item in old + new):
        merged = {item["id"]: item for item in old}
        merged.update({item["id"]: item for item in new})
        return list(merged.values())
    return list(dict.fromkeys([*old, *new])) if all(isinstance(i, str) for i in old + new) else new


def merge_part(old: Part | None, new: Part) -> Part:
    """One gate's part: lists merged by case id, mappings key by key, anything else the newer."""
    if not old:
        return dict(new)
    out = dict(old)
    for key, value in new.items():
        if isinstance(value, list) and isinstance(old.get(key), list):
            out[key] = _merge_lists(old[key], value)
        elif isinstance(value, dict) and isinstance(old.get(key), dict):
            out[key] = {**old[key], **value}
        else:
            out[key] = value
    return out


def stamp(part: Part, run_id: str) -> Part:
    """Every case of a part this run made carries the run's id."""
    for item in part.get("cases", []):
        item.setdefault("run_id", run_id)
    return part


def merge_results(stored: dict[str, Any] | None, run: dict[str, Any], parts: dict[str, Part]) -> dict[str, Any]:
    """The results to write: the stored ones (if any) with this run's parts merged in."""
    results: dict[str, Any] = {k: v for k, v in (stored or {}).items()}
    runs = [r for r in results.get("runs", []) if r.get("id") != run["id"]]
    this_run = dict(run)
    cases_this_run = 0
    for section in ordered():
        part = parts.get(section.name)
        if part is None:
            continue
        part = stamp(dict(part), run["id"])
        cases_this_run += len(part.get("cases", []))
        old = results if section.key is None else results.get(section.key)
        merged = merge_part({k: old[k] for k in part if old and k in old} if section.key is None else old, part)
        if section.finish is not None:
            merged = section.finish(merged)
        if section.key is None:
            results.update(merged)
        else:
            results[section.key] = merged
    this_run["cases"] = cases_this_run
    for key, empty in (("cases", []), ("not_applicable", []), ("model_hashes", {})):  # the published top-level keys
        results.setdefault(key, empty)
    results.update({
        "interrupted": bool(run.get("interrupted")), "not_run": list(run.get("not_run", [])),
        "schema_version": SCHEMA_VERSION, "run": this_run, "runs": runs + [this_run],
        "device": run.get("device"), "device_class": run.get("device_class"), "config": run.get("config"),
        "reference": run.get("reference"), "summary": count_outcomes(results.get("cases", [])),
    })
    return results


def summary_markdown(results: dict[str, Any]) -> str:
    """summary.md from results.json alone."""
    run = results.get("run", {})
    head = ["# accelgate report", "",
            f"Device: `{results.get('device')}` (baselines: `{results.get('device_class')}`), reference backend: "
            f"`{results.get('reference')}`, config: `{results.get('config') or 'built-in defaults'}`."]
    per_gate = []
    for section in ordered():
        part = results if section.key is None else results.get(section.key)
        cases = (part or {}).get("cases", [])
        if cases:
            per_gate.append(f"{section.name}: {counts_text(count_outcomes(cases))}")
    na = len(results.get("not_applicable", []))
    head.append("Cases: " + ("; ".join(per_gate) or "none") + (f"; {na} n/a" if na else "") + ".")
    runs = results.get("runs", [])
    if len(runs) > 1:
        head.append("")
        head.append(f"This report merges {len(runs)} runs (same device class, config and versions); each case "
                    "names the run that made it (`run_id` in results.json):")
        head += [f"- `{r['id']}`: {r.get('cases', 0)} case(s), started {r.get('started')}" for r in runs]
    elif run:
        head.append(f"Run `{run.get('id')}`, started {run.get('started')}.")
    versions = run.get("versions") or {}
    if versions:  # which accelgate judged, so a verdict that moves after an upgrade can be traced to it
        head.append("Versions: " + ", ".join(f"{name} `{version}`" for name, version in versions.items()) + ".")
    if results.get("interrupted"):
        not_run = results.get("not_run", [])
        head += ["", f"**Interrupted** ({run.get('stopped_because') or 'Ctrl-C'}): {len(not_run)} collected case(s) "
                     "did not run" + (": " + ", ".join(f"`{c['id']}`" for c in not_run[:12]) if not_run else "")
                 + (f" and {len(not_run) - 12} more" if len(not_run) > 12 else "") + "."]
    body = failures_markdown(results)  # failures first, then each gate's tables, then the reasons once
    for section in ordered():
        part = results if section.key is None else results.get(section.key)
        if part and part.get("cases"):
            body += section.render(part, results)
    body += reasons_markdown(results)
    return "\n".join(head) + "\n\n" + "\n\n".join(body) + "\n"


def write_report(directory: Path, run: dict[str, Any], parts: dict[str, Part],
                 stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge `parts` into the directory's report and write results.json, summary.md and each
    section's own files; returns the merged results."""
    directory = Path(directory)
    if stored is None:
        stored = check_mergeable(directory, run)
    results = merge_results(stored, run, parts)
    atomic_write_text(directory / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    render_files(directory, results)
    return results


def render_files(directory: Path, results: dict[str, Any]) -> list[Path]:
    """Everything rendered from results.json: summary.md, the sections' own files (speed.md),
    the plots and index.html; what a re-render (`python -m accelgate.report DIR`) rewrites."""
    from accelgate.report.figures import render_figures
    from accelgate.report.html import render_index

    directory = Path(directory)
    files: dict[str, str | bytes] = {"summary.md": summary_markdown(results)}
    for section in ordered():
        part = results if section.key is None else results.get(section.key)
        if section.files is not None and part and part.get("cases"):
            files.update(section.files(part, results))
    plots, figure_blocks = render_figures(results)
    files.update(plots)
    files["index.html"] = render_index(results, figure_blocks)
    for name, data in files.items():
        atomic_write_text(directory / name, data)
    return [directory / name for name in files]
