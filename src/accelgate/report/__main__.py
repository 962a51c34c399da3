"""`python -m accelgate.report DIR` re-renders a report from its results.json alone;
`python -m accelgate.report --compare OLD NEW` says what changed between two reports.

Re-rendering rewrites summary.md, index.html, the plots and the gates' own files (speed.md)
from DIR/results.json, the report's interface: after an accelgate upgrade, or after editing
nothing at all (the result is the same summary.md). Comparing is what a nightly job posts:
the verdicts that flipped, the metrics that moved beyond their floor, the speed numbers that
changed beyond a tolerance (see `accelgate.report.compare`). OLD and NEW are report
directories or results.json files.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PROG = "python -m accelgate.report"


class UsageError(Exception):
    """What was wrong with the command line or the files it names; printed, exit status 2."""


def load(where: str) -> tuple[dict[str, Any], Path]:
    """results.json of a report directory (or the file itself) and the report directory."""
    path = Path(where)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"{file}: no such results.json. Write a report first with "
                         f"`pytest -m quality --quality-report={path}`, or name the directory that holds one")
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"{file} is not readable JSON ({error}); a report's results.json is written by "
                         "`pytest --quality-report=DIR`") from None
    if not isinstance(results, dict) or "schema_version" not in results:
        raise UsageError(f"{file} is not an accelgate results.json (no schema_version)")
    return results, file.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("report", nargs="?", metavar="DIR", help="re-render DIR's summary.md and index.html")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="print what changed from OLD to NEW")
    parser.add_argument("--speed-tolerance", type=float, default=0.1, metavar="FRACTION",
                        help="--compare: a relative speed change larger than this is listed (default 0.1: 10%%)")
    parser.add_argument("--output", metavar="FILE", help="--compare: also write the markdown to FILE")
    parser.add_argument("--exit-code", action="store_true",
                        help="--compare: exit with status 1 when anything changed (like git diff --exit-code)")
    args = parser.parse_args(argv)
    if bool(args.report) == bool(args.compare):
        parser.error("give either a report directory to re-render or --compare OLD NEW")
    from accelgate.plugin import register_report_sections

    register_report_sections()
    try:
        if args.compare:
            return compare(args)
        return rerender(args.report)
    except UsageError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2


def rerender(where: str) -> int:
    from accelgate.report.writer import render_files

    results, directory = load(where)
    for path in render_files(directory, results):
        print(f"wrote {path}")
    return 0


def compare(args) -> int:
    from accelgate.report.compare import compare as diff
    from accelgate.report.compare import comparison_markdown

    (old, _), (new, _) = load(args.compare[0]), load(args.compare[1])
    result = diff(old, new, args.speed_tolerance)
    text = comparison_markdown(result, old, new, args.compare[0], args.compare[1], args.speed_tolerance)
    sys.stdout.write(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    return 1 if args.exit_code and result.changed else 0


if __name__ == "__main__":
    sys.exit(main())
