"""How much of the main job (`pytest -m quality`) is generation, and how much is overhead.

Runs the main job with a report and a JUnit XML, then divides its wall time by the summed
generation time of its per-image and distribution cases (`timing.generate_s` in
results.json). Cold compiles are excluded on both sides: the time of every test whose
backend compiles (torch-compile) is taken out of the wall time, and its generation out of
the sum, because a 30-70 s inductor compile is neither overhead nor generation.

    python benchmarks/main_job_overhead.py [-- extra pytest args]

Prints one markdown line; `benchmarks/main_job_overhead.md` keeps the measured lines.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

COMPILING = ("torch-compile",)


def _compiling(test_id: str) -> bool:
    return any(f"/{name}/" in test_id for name in COMPILING)


def main(extra: list[str]) -> None:
    out = Path(tempfile.mkdtemp(prefix="accelgate-overhead-"))
    junit = out / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-m", "quality", f"--quality-report={out / 'report'}",
               f"--junitxml={junit}", "-q", "-p", "no:cacheprovider", *extra]
    started = time.perf_counter()
    subprocess.run(command, check=False)
    wall = time.perf_counter() - started
    compile_test_s = sum(float(case.get("time", 0)) for case in ET.parse(junit).iter("testcase")
                         if _compiling(case.get("name", "")))
    data = json.loads((out / "report" / "results.json").read_text())
    cases = list(data.get("cases", [])) + list(data.get("distribution", {}).get("cases", []))
    generation = sum(c.get("timing", {}).get("generate_s", 0.0) for c in cases if not _compiling("/" + c["id"] + "/"))
    compile_cases = sum(1 for c in cases if _compiling("/" + c["id"] + "/"))
    overhead_wall = wall - compile_test_s
    print(f"| `{' '.join(['pytest', '-m', 'quality', *extra])}` | {len(cases)} cases ({compile_cases} compiling, "
          f"excluded) | wall {wall:.1f} s, of which compiling tests {compile_test_s:.1f} s | generation "
          f"{generation:.1f} s | **{overhead_wall / generation:.2f}x** |")


if __name__ == "__main__":
    main(sys.argv[2:] if sys.argv[1:2] == ["--"] else sys.argv[1:])
