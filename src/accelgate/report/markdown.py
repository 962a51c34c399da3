"""Markdown pieces every report section uses, so the three gates' tables read alike."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

OUTCOME_MARK = {"passed": "✅ passed", "failed": "❌ failed", "error": "💥 error", "skipped": "⏭ skipped",
                "oom": "🧱 out of memory"}


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def counts_text(counts: dict[str, int]) -> str:
    """'3 failed, 40 passed': outcomes in a stable order."""
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"


def shown(ids: Sequence[str], limit: int = 6) -> str:
    """A few case ids and how many more."""
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
