"""The report's sections: each gate registers how its part of results.json becomes markdown.

The writer (`report.writer`) knows no gate: it merges parts by case id and renders each
registered section from the merged JSON, so summary.md can always be rebuilt from
results.json alone. A gate's report module registers its section when it is imported.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Part = dict[str, Any]


@dataclass(frozen=True)
class Section:
    name: str  # the gate: "quality", "distribution", "speed"
    key: str | None  # where its part lives in results.json; None: at the top level (the quality gate's keys)
    order: int  # position in summary.md
    render: Callable[[Part, dict[str, Any]], list[str]]  # (its part, the whole results) -> markdown sections
    finish: Callable[[Part], Part] | None = None  # recompute what derives from the cases after a merge
    files: Callable[[Part, dict[str, Any]], dict[str, str]] | None = None  # extra files beside summary.md


SECTIONS: dict[str, Section] = {}


def register_section(section: Section) -> Section:
    if section.name in SECTIONS and SECTIONS[section.name] != section:
        raise ValueError(f"report section {section.name!r} is registered twice")
    SECTIONS[section.name] = section
    return section


def ordered() -> list[Section]:
    return sorted(SECTIONS.values(), key=lambda s: s.order)
