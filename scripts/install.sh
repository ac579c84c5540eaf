#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with the project and the extras named in $1
# (default "all"). Safe to rerun; pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned exactly (CPU build on this box); a looser spec pulls GBs of CUDA wheels.
.venv/bin/python -m pip install -q -e ".[${extras}]"
# insightface's metadata asks for the non-headless opencv-python, which would clobber
# opencv-python-headless (both own cv2/): install it without deps; its real needs are
# in the [insightface] extra.
.venv/bin/python -m pip install -q --no-deps "insightface==2.1"
