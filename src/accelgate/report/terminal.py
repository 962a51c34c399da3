"""The gates' terminal summaries, from their results.json parts: cases grouped by outcome.

What a person scans for after a long run comes first: the failed and erroring cases, one line
each with the reason, and for a per-image case the three images of its worst image as paths
that open from the current directory; then the skipped cases grouped by reason (one line per
reason, not per case); then the passed ones, by id.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from accelgate.report.markdown import shown
from accelgate.verdict import shown_path

Line = tuple[str, dict[str, bool]]
ORDER = (("failed", {"red": True}), ("error", {"red": True}), ("skipped", {"yellow": True}), ("passed", {"green": True}))
KINDS = ("candidate", "baseline", "diff")


def worst_image(case: dict[str, Any]) -> dict[str, Any] | None:
    """The image the verdict judged worst (results.json `worst_image`), if its files were written."""
    images = case.get("images") or []
    index = case.get("worst_image")
    image = images[index] if isinstance(index, int) and 0 <= index < len(images) else None
    return image if image and all(image.get(kind) for kind in KINDS) else None


def outcome_lines(cases: list[dict[str, Any]], report_dir: Path | None = None) -> list[Line]:
    """Lines of text and their colour: failed, error, skipped (by reason), passed."""
    lines: list[Line] = []
    for outcome, colour in ORDER:
        group = [c for c in cases if c["outcome"] == outcome]
        if not group:
            continue
        if outcome == "passed":
            lines.append((f"PASSED ({len(group)}): {shown([c['id'] for c in group], 8)}", colour))
        elif outcome == "skipped":
            lines.append((f"SKIPPED ({len(group)}), by reason:", colour))
            by_reason: dict[str, list[str]] = {}
            for case in group:
                by_reason.setdefault((case.get("reason") or "no reason given").splitlines()[0], []).append(case["id"])
            for reason, ids in sorted(by_reason.items(), key=lambda item: -len(item[1])):
                lines.append((f"  {len(ids)} case(s): {reason} ({shown(ids, 4)})", {}))
        else:
            lines.append((f"{outcome.upper()} ({len(group)}):", colour))
            for case in group:
                reason = (case.get("reason") or "; ".join(case.get("problems", [])) or "").splitlines()
                lines.append((f"  {case['id']}: {reason[0] if reason else outcome}", {}))
                image = worst_image(case)
                if image is not None:
                    paths = "  ".join(shown_path(image[kind], report_dir) for kind in KINDS)
                    lines.append((f"    images (candidate, baseline, diff): {paths}", {}))
    return lines


def write_lines(terminalreporter, lines: list[Line]) -> None:
    for text, markup in lines:
        terminalreporter.write_line(text, **markup)
