#!/usr/bin/env bash
# The GPU check: full-size iteration time (fp32, mixed_float16, XLA), MirroredStrategy over two
# logical GPUs carved from one against one device, and inference ms per slice at batch 1 and 16,
# in at most 8 minutes, into one JSON (bench/gpu_check.py has the details).
#
#   bench/gpu_check.sh [OUT.json] [--dry_run] [more gpu_check.py flags]
#
# OUT defaults to gpu_check.json. --dry_run: tiny sizes on any device (CPU too), to check the script.
# Without --dry_run it refuses to run when TensorFlow sees no GPU. PYTHON picks the interpreter
# (default: .venv/bin/python, else python3); it needs a TensorFlow with CUDA for a real run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=gpu_check.json
if [[ $# -gt 0 && "$1" != --* ]]; then OUT="$1"; shift; fi
DRY=0
for arg in "$@"; do [[ "$arg" == --dry_run ]] && DRY=1; done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
if [[ $DRY == 0 ]]; then
  if ! GPUS=$("$PY" -c 'import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' 2>/dev/null); then
    echo "gpu_check: $PY cannot import tensorflow" >&2; exit 2
  fi
  if [[ "$GPUS" == 0 ]]; then
    echo "gpu_check: TensorFlow ($PY) sees no GPU; install tensorflow[and-cuda] or use --dry_run" >&2; exit 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
fi
lscpu 2>/dev/null | grep -E "^Model name" || true
exec timeout 480 "$PY" bench/gpu_check.py --out "$OUT" "$@"
