"""Calibrate the built-in cards of the registry recognizers on a labelled reference set.

    .venv/bin/python bench/calibrate_cards.py [--reference ../shared/data/faces]

For every recognizer in models/cards and every detector it may be run with, runs `curate calibrate`
and merges the calibration into models/cards/<name>.json (one calibration per detector: landmarks
set the crops, crops set the angles). A maintainer runs this when a model, the alignment or the
reference set changes, and commits the cards; nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(rec, det) for rec in ("edgeface_s", "w600k_mbf", "sface", "dlib-resnet") for det in ("yunet", "scrfd")]
PAIRS.append(("dlib-resnet", "dlib-hog"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", default=str(ROOT.parent / "shared" / "data" / "faces"))
    ap.add_argument("--only", nargs="*", help="recognizer[:detector] pairs to redo (default: all)")
    args = ap.parse_args()
    for rec, det in PAIRS:
        if args.only and rec not in args.only and f"{rec}:{det}" not in args.only:
            continue
        cmd = [sys.executable, "-m", "curate.cli", "calibrate", "--recognizer", rec, "--detector", det,
               "--reference", args.reference, "--out", str(ROOT / "models" / "cards" / f"{rec}.json")]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
