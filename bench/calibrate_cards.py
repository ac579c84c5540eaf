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
    ap.add_argument("--chart", default=str(ROOT / "docs" / "img" / "quality-edc.svg"),
                    help="where to draw the default card's error-versus-discard curves (the README's chart)")
    args = ap.parse_args()
    for rec, det in PAIRS:
        if args.only and rec not in args.only and f"{rec}:{det}" not in args.only:
            continue
        cmd = [sys.executable, "-m", "curate.cli", "calibrate", "--recognizer", rec, "--detector", det,
               "--reference", args.reference, "--out", str(ROOT / "models" / "cards" / f"{rec}.json")]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    chart(ROOT / "models" / "cards" / "edgeface_s.json", "yunet", args.chart)


def chart(card: Path, detector: str, out: str) -> None:
    """The card's quality curves on people held out of its fit, against the detector score and the
    norm alone, as the report draws them."""
    import base64
    import json

    import pyarrow as pa

    from curate.report import _Charts

    curves = json.loads(card.read_text())["calibrations"][detector]["quality"]["match"]["edc_curves"]
    rows = [{"signal": k, "discard": d, "fnmr": f} for k, v in curves.items() if k != "discard"
            for d, f in zip(curves["discard"], v)]
    img = _Charts().edc(pa.Table.from_pylist(rows))  # an <img> with the SVG inline, base64
    Path(out).write_bytes(base64.b64decode(img.split("base64,", 1)[1].split('"', 1)[0]))


if __name__ == "__main__":
    main()
