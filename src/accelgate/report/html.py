"""index.html: the page a release engineer opens, rendered with Jinja2 from results.json alone.

Order: a header (device, versions, runs, counts per outcome), the failures first (per image
the stored baseline, the candidate and the amplified difference side by side, every metric
with value, threshold and direction, the reason), then each gate's section (the per-image
gate's prompt x backend grids, the plots, and the same tables as summary.md), and last every
skip and n/a reason once with its cases. Self-contained: no script, no font or style from the
network; images and plots by paths relative to the report directory, so the folder can be
zipped, uploaded as a CI artifact or opened from disk.

The templates are package data (`report/templates/`); the gates' tables are their markdown
sections (the same text as summary.md) turned into HTML by markdown-it, so the two pages
cannot drift apart. Nothing here measures or judges: it arranges what the gates wrote.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from accelgate.report.overview import failures, gate_parts, reasons
from accelgate.report.sections import SECTIONS
from accelgate.verdict import count_outcomes

TITLES = {"quality": "Per-image quality (vs stored baselines)"}  # the others title themselves
SMALL = 128  # images narrower than this are scaled up without smoothing, so pixels stay visible
OUTCOME_ORDER = ("failed", "error", "skipped", "passed")


@lru_cache(maxsize=1)
def environment():
    """The Jinja2 environment: the package's templates, HTML autoescaping, a markdown filter."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    env = Environment(loader=PackageLoader("accelgate.report", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html", "j2"], default_for_string=True), trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["markdown"] = lambda text: Markup(parser.render(text))
    return env


def _small(resolution: Any) -> bool:
    try:
        return int(resolution[0]) < SMALL
    except (TypeError, ValueError, IndexError):
        return False


def _sections(results: dict[str, Any], figures: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for name, part in gate_parts(results):
        section = SECTIONS[name]
        title = TITLES.get(name, name)
        if section.html is not None:
            blocks = section.html(part, results)
        else:  # markdown only: its own first heading titles the section (no second title above it)
            texts = section.render(part, results)
            if texts and texts[0].startswith("## "):
                heading, _, rest = texts[0].partition("\n")
                title, texts = heading[3:].strip(), [rest.strip()] + texts[1:]
            blocks = [{"kind": "markdown", "text": text} for text in texts if text]
        for block in blocks:
            if block["kind"] == "grid":
                block["small"] = _small(block["resolution"].split("x"))
        grids = [b for b in blocks if b["kind"] == "grid"]
        rest = [b for b in blocks if b["kind"] != "grid"]
        out.append({"name": name, "title": title, "blocks": grids + figures.get(name, []) + rest})
    return out


def render_index(results: dict[str, Any], figures: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """index.html's text; `figures` are the plot blocks per section (`report.figures`)."""
    run = results.get("run") or {}
    cases_by_id = {(gate, c["id"]): c for gate, part in gate_parts(results) for c in part["cases"]}
    found = failures(results)
    for failure in found:
        failure["small"] = _small(cases_by_id.get((failure["gate"], failure["id"]), {}).get("resolution"))
    gates = []
    for name, part in gate_parts(results):
        counts = count_outcomes({"outcome": c.get("outcome") or c.get("verdict")} for c in part["cases"])
        na = len(results.get("not_applicable", [])) if name == "quality" else 0
        gates.append({"name": name, "counts": [(o, counts[o]) for o in OUTCOME_ORDER if counts.get(o)]
                      + ([("na", na)] if na else [])})
    total = sum(n for gate in gates for _, n in gate["counts"])
    headline = f"{len(found)} failing of {total} case(s)" if found else f"{total} case(s), none failing"
    context = {
        "headline": headline, "gates": gates,
        "device": results.get("device"), "device_class": results.get("device_class"),
        "reference": results.get("reference"), "config": results.get("config"),
        "versions": sorted((run.get("versions") or {}).items()),
        "runs": results.get("runs") or ([run] if run else []),
        "failures": found, "sections": _sections(results, figures or {}), "reasons": reasons(results),
    }
    return environment().get_template("index.html.j2").render(**context)
