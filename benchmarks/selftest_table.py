"""Run the sensitivity self-test on this repository's matrix and write benchmarks/selftest.md.

    python benchmarks/selftest_table.py            # runs pytest -m quality --accelgate-selftest
    python benchmarks/selftest_table.py --from DIR # only re-renders from DIR/results.json

The table is rendered from the run's results.json (one row per model, one column per damage,
what caught it or MISSED), never typed in; the run's exit status is expected to be 1 while any
damage is missed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["pytest", "-m", "quality", "--accelgate-selftest", "-p", "no:cacheprovider", "-q"]


def cell(case: dict) -> str:
    if case["outcome"] == "passed":
        return "caught: " + ", ".join(m for m, v in case["metrics"].items() if not v["passed"])
    if case["outcome"] == "failed" and case["reason"].startswith("NOT CAUGHT"):
        worst = case["metrics"].get("psnr", {}).get("value")
        return f"**MISSED** (PSNR {float(worst):.1f} dB)" if worst is not None else "**MISSED**"
    return case["outcome"]


def render(results: dict) -> str:
    from accelgate.backends.damage import DAMAGES

    cases = [c for c in results["cases"] if c["backend"] in DAMAGES and c["outcome"] != "skipped"]
    rows: dict[str, dict[str, str]] = {}
    for case in cases:
        row = f"{case['model']} {case['resolution'][0]}x{case['resolution'][1]}"
        rows.setdefault(row, {})[case["backend"]] = cell(case)
    judged = [c for c in cases if c["outcome"] in ("passed", "failed")]
    caught = sum(c["outcome"] == "passed" for c in judged)
    lines = [
        "# The sensitivity self-test on this repository's matrix",
        "",
        "Each shipped damage (`accelgate.backends.damage`, magnitudes below) against every model",
        "of the default matrix that runs here, under the repository's own baselines and tolerances.",
        "GPU models skip on CPU. Produced by",
        "",
        "```bash",
        "python benchmarks/selftest_table.py   # runs: " + " ".join(COMMAND),
        "```",
        "",
        f"Run {results.get('run', {}).get('started', '?')}, device class {results.get('run', {}).get('device_class', '?')}: "
        f"**{caught} of {len(judged)}** damage cases caught.",
        "",
        "| damage | what it does |",
        "|---|---|",
        *[f"| `{name}` | {spec.description} |" for name, spec in DAMAGES.items()],
        "",
        "| model | " + " | ".join(f"`{name}`" for name in DAMAGES) + " |",
        "|---|" + "---|" * len(DAMAGES),
        *[f"| {row} | " + " | ".join(found.get(name, "n/a") for name in DAMAGES) + " |"
          for row, found in sorted(rows.items())],
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, help="a report directory to re-render from")
    args = parser.parse_args()
    source = args.source
    if source is None:
        source = Path(tempfile.mkdtemp(prefix="accelgate-selftest-"))
        run = subprocess.run([sys.executable, "-m", *COMMAND, f"--quality-report={source}"], cwd=REPO)
        print(f"self-test exit status {run.returncode} (1 while any damage is missed)")
    results = json.loads((source / "results.json").read_text(encoding="utf-8"))
    out = REPO / "benchmarks" / "selftest.md"
    out.write_text(render(results), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
