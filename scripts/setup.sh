#!/usr/bin/env bash
# Create (or recreate) ./.venv with everything the suite needs, from PyPI only.
# Usage: ./scripts/setup.sh [VENV_DIR]     (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python3 -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --no-cache-dir -r requirements/ci.txt
"$venv/bin/python" -m pip install --quiet --no-cache-dir --no-deps -r requirements/accelerations.txt
"$venv/bin/python" -m pip install --quiet --no-deps -e .
echo "accelgate: environment ready in $venv"
