#!/usr/bin/env bash
# A few minutes on a GPU, whenever one is at hand: the tiny pipelines on CUDA in fp16, their
# GPU baselines written to a scratch folder (never the repository's CPU baselines), the
# per-image quality gate against them, and the speed gate with CUDA-event step timing.
#
#     scripts/gpu-smoke.sh                  # everything on cuda, into a fresh mktemp folder
#     SMOKE_DIR=/data/smoke scripts/gpu-smoke.sh
#     SMOKE_DEVICE=cpu SMOKE_DTYPE=float32 SMOKE_MODELS=tiny-sd scripts/gpu-smoke.sh   # the script's own test
#
# What comes back, under $SMOKE_DIR: baselines/<gpu class>/..., report/ (index.html,
# summary.md, results.json with the GPU's device class and versions), bench/ (pytest-benchmark's
# saved run: it/s from torch.cuda.Event stamps per step, E2E, peak torch.cuda memory).
# Commit the figures you want to keep with this command line next to them.
# Calibration per GPU class (issue 10) joins here once it lands; until then the gate uses
# the config's tolerances.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTEST=${PYTEST:-$( [ -x .venv/bin/pytest ] && echo .venv/bin/pytest || echo pytest )}
DEVICE=${SMOKE_DEVICE:-cuda}
DTYPE=${SMOKE_DTYPE:-float16}
MODELS=${SMOKE_MODELS:-tiny-sd,tiny-sdxl,tiny-pixart,tiny-dit}
BACKENDS=${SMOKE_BACKENDS:-eager,channels-last,bf16,first-block-cache}
DIR=${SMOKE_DIR:-$(mktemp -d -t accelgate-gpu-smoke-XXXXXX)}
mkdir -p "$DIR"

if [ "$DEVICE" != cpu ] && ! "${PYTEST%pytest}python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "gpu-smoke: torch sees no CUDA device here; run it on a GPU machine (or SMOKE_DEVICE=cpu to check the script)" >&2
  exit 2
fi

# The smoke matrix: the listed tiny models, every one in $DTYPE at its native resolution.
{
  echo 'reference = "eager"'
  echo "device = \"$DEVICE\""
  echo "baseline_dir = \"$DIR/baselines\""
  printf 'models = [%s]\n' "$(echo "$MODELS" | sed 's/[^,]*/"&"/g')"
  printf 'backends = [%s]\n' "$(echo "$BACKENDS" | sed 's/[^,]*/"&"/g')"
  echo '[generation]'
  echo "dtype = \"$DTYPE\""
} > "$DIR/smoke.toml"
echo "gpu-smoke: $DEVICE, $DTYPE, models $MODELS, backends $BACKENDS, into $DIR"

set -x
"$PYTEST" -m quality -p no:cacheprovider --accelgate-config "$DIR/smoke.toml" --regen-baselines -q
"$PYTEST" -m quality -p no:cacheprovider --accelgate-config "$DIR/smoke.toml" --quality-report "$DIR/report" -q || status=$?
"$PYTEST" -m benchmark -p no:cacheprovider -p no:xdist --accelgate-config "$DIR/smoke.toml" \
  --benchmark-storage "file://$DIR/bench" --benchmark-autosave --quality-report "$DIR/report" -q || status=$?
set +x
echo "gpu-smoke: report in $DIR/report/index.html, timings in $DIR/bench"
exit "${status:-0}"
