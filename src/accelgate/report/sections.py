"""The report's sections: each gate registers how its part of results.json becomes markdown,
HTML and plots.

The writer (`report.writer`) knows no gate: it merges parts by case id and renders each
registered section from the merged JSON, so summary.md and index.html can always be rebuilt
from results.json alone (`python -m accelgate.report DIR`). A gate's report module registers
its section when it is imported.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Part = dict[str, Any]
Block = dict[str, Any]  # an index.html block: {"kind": "markdown", "text": ...}, {"kind": "grid", ...}


@dataclass(frozen=True)
class FigureSpec:
    """A plot a section wants in index.html: `draw` fills a matplotlib Figure (no pyplot, no
    global state) from the section's part; the renderer saves it as plots/NAME.png."""

    name: str  # file stem, unique in the report
    title: str
    caption: str
    draw: Callable[[Any], None]  # (matplotlib.figure.Figure) -> None
    size: tuple[float, float] = (8.0, 4.0)  # inches, at 100 dpi


@dataclass(frozen=True)
class Section:
    name: str  # the gate: "quality", "distribution", "speed"
    key: str | None  # where its part lives in results.json; None: at the top level (the quality gate's keys)
    order: int  # position in summary.md
    render: Callable[[Part, dict[str, Any]], list[str]]  # (its part, the whole results) -> markdown sections
    finish: Callable[[Part], Part] | None = None  # recompute what derives from the cases after a merge
    files: Callable[[Part, dict[str, Any]], dict[str, str]] | None = None  # extra files beside summary.md
    html: Callable[[Part, dict[str, Any]], list[Block]] | None = None  # index.html blocks; default: render's markdown
    figures: Callable[[Part, dict[str, Any]], list[FigureSpec]] | None = None  # plots, shown before its blocks


SECTIONS: dict[str, Section] = {}


def register_section(section: Section) -> Section:
    if section.name in SECTIONS and SECTIONS[section.name] != section:
        raise ValueError(f"report section {section.name!r} is registered twice")
    SECTIONS[section.name] = section
    return section


def ordered() -> list[Section]:
    return sorted(SECTIONS.values(), key=lambda s: s.order)
