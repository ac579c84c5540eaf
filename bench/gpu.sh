#!/usr/bin/env bash
# The GPU measurements in one command, for a machine with one NVIDIA GPU and a CUDA build of torch
# (the device tool's image has torch, onnxruntime, numpy and pyarrow; nothing can be fetched there):
#
#     bash bench/gpu.sh [OUT_DIR]        # results: OUT_DIR/gpu.json (default bench-out), under 10 minutes
#
# Optional wheels in .whl/ (onnxruntime-gpu, faiss-gpu-cu12, opencv-python-headless, ...) are
# installed first, offline; without them the ONNX and faiss parts say they were skipped and the
# torch parts run. CI never runs this.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-out}"
mkdir -p "$out"
py=python3
[ -x .venv/bin/python ] && ! python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && py=.venv/bin/python
if compgen -G ".whl/*.whl" >/dev/null; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$out/nvidia-smi.txt"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the project, where it is not installed (the GPU machine)
timeout 570 $py bench/gpu.py --out "$out/gpu.json" "${@:2}" 2>&1 | tee "$out/gpu.log"
