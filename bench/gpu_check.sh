#!/usr/bin/env bash
# The GPU check, on a lent GPU machine (device tool `run`, from the repo root), after
# `bash bench/gpu_check_prepare.sh` here:
#   run(command="bash bench/gpu_check.sh", carry=[".whl", ".gpu_check"], timeout_s=420)
# CPU dry run here:
#   PYTHON=/work/main/.venv/bin/python bash bench/gpu_check.sh --cpu-dry-run
# Installs the carried wheels (trl, datasets and their missing deps) into /tmp/site when the
# machine lacks them, then runs bench/gpu_check.py on the carried SmolLM2-135M-Instruct files.
# Its summary (a table) ends the output; summary.json lands in $OUT (or runs/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import trl, datasets" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "trl/datasets are missing and no wheels are in .whl/: run bench/gpu_check_prepare.sh and carry .whl" >&2
    exit 2
  fi
  wheels=(.whl/*.whl)
  # datasets 5.2 needs pyarrow >= 24; the carried one goes in only when the machine's is older
  if ! "$PY" -c "import pyarrow, sys; sys.exit(int(pyarrow.__version__.split('.')[0]) < 24)" 2>/dev/null; then
    for wheel in .whl/optional/pyarrow-*.whl; do [ -e "$wheel" ] && wheels+=("$wheel"); done
    [ ${#wheels[@]} -gt 4 ] || echo "warning: pyarrow here is older than 24 and none was carried" >&2
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
exec "$PY" bench/gpu_check.py --model .gpu_check/smollm2-135m-instruct --out "${OUT:-runs/gpu_check}" "$@"
