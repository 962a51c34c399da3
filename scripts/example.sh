#!/usr/bin/env bash
# The example project (examples/my-project) against accelgate as a user installs it: the wheel
# built from this checkout, installed with --no-deps into a venv of its own that reuses the
# packages of an existing environment (torch, diffusers, ...: no second 6 GB install), then
# the example's quality run from its own directory. CI runs it after the test suite.
# Usage: ./scripts/example.sh [PYTHON]     (default .venv/bin/python: the environment to reuse)
set -euo pipefail
python="${1:-$(dirname "$0")/../.venv/bin/python}"
python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"  # absolute, symlink kept: it names the venv
cd "$(dirname "$0")/.."
work="$PWD/.cache/example"
rm -rf "$work" && mkdir -p "$work"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" .
# A venv of the same interpreter, without pip; a .pth line puts the reused environment's
# site-packages after its own (a plain path line: that directory's own .pth files, such as
# an editable install of accelgate, are not run, so only the wheel provides accelgate).
"$python" -m venv --without-pip "$work/venv"
reused="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
own="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$reused" > "$own/reused-environment.pth"
"$work/venv/bin/python" -m pip install --quiet --no-deps --ignore-installed "$work"/dist/accelgate-*.whl
"$work/venv/bin/python" - "$own" <<'PY'
import sys
from importlib import metadata

import accelgate

plugin = next(e for e in metadata.entry_points(group="pytest11") if e.name == "accelgate")
assert accelgate.__file__.startswith(sys.argv[1]), f"accelgate imported from {accelgate.__file__}, not the wheel"
print(f"accelgate example: accelgate {metadata.version('accelgate')} from the wheel ({accelgate.__file__}), "
      f"plugin {plugin.value}")
PY
cd examples/my-project
"$work/venv/bin/python" -m pytest -p no:cacheprovider -m quality --quality-report="$work/report"
