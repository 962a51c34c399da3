"""The sections' plots, drawn with matplotlib into PNG files beside index.html.

Each section says what to draw (`Section.figures` -> `FigureSpec`s, from its part of
results.json); this module owns how: a fresh `matplotlib.figure.Figure` per plot (no pyplot,
so no global state, no GUI backend, nothing left open between plots), constrained layout,
100 dpi, PNG without a timestamp, so re-rendering the same results.json gives the same bytes.
A plot that fails to draw is left out with its error in the page, never the whole report.
"""
from __future__ import annotations

import io
import re
from typing import Any

from accelgate.report.sections import ordered

FOLDER = "plots"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def render_figures(results: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, list[dict[str, Any]]]]:
    """(files: relative path -> PNG bytes, blocks: section name -> index.html figure blocks)."""
    files: dict[str, bytes] = {}
    blocks: dict[str, list[dict[str, Any]]] = {}
    for section in ordered():
        part = results if section.key is None else results.get(section.key)
        if section.figures is None or not part or not part.get("cases"):
            continue
        for spec in section.figures(part, results):
            path = f"{FOLDER}/{_safe(spec.name)}.png"
            block = {"kind": "figure", "src": path, "title": spec.title, "caption": spec.caption, "error": ""}
            try:
                files[path] = draw_png(spec.draw, spec.size)
            except Exception as error:  # one broken plot must not cost the release engineer the page
                block.update(src="", error=f"{type(error).__name__}: {error}")
            blocks.setdefault(section.name, []).append(block)
    return files, blocks


def draw_png(draw, size: tuple[float, float]) -> bytes:
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100, layout="constrained")
    draw(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
