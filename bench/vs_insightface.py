"""curate against the tool users pick today: insightface's FaceAnalysis on the same crawl and models.

    .venv/bin/python bench/vs_insightface.py [--faces ../shared/data/faces] [--exclude orl] [--engine auto]

The crawl: every photo of ``--faces`` but those of the excluded sources (ORL's 92x112 grey lab
shots by default: 1,590 photos), copied into identity folders. Both sides run SCRFD-500M and
w600k_mbf from the same package files (models/cards), on the CPU, one after the other:

  insightface   FaceAnalysis (detection + recognition, det_size 640) in one process with
                onnxruntime's default threads: cv2.imread and app.get(img) per photo, timed from
                the models' load to the last photo
  curate        ``curate run CRAWL --detector scrfd --recognizer w600k_mbf`` as a user runs it:
                start-up, spine, scoring, audits and report; its spine time from the summary

It prints each side's seconds, photos per second, photos with a face found, and the ratios
(curate's spine throughput over insightface's, curate's whole command over insightface's time).
Not a test; results to stdout and bench-out/vs_insightface.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"


def build_crawl(faces: Path, exclude: list[str], dest: Path) -> int:
    n = 0
    for d in sorted(p for p in faces.iterdir() if p.is_dir()):
        if any(d.name.startswith(x + "__") for x in exclude):
            continue
        for f in sorted(p for p in d.iterdir() if p.is_file()):
            (dest / d.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / d.name / f.name)
            n += 1
    return n


def run_insightface(crawl: Path, work: Path) -> dict:
    import cv2

    from models.cards import builtin, packaged_path
    from models.vendor import import_vendored

    pack = work / "models" / "facecurate"
    pack.mkdir(parents=True, exist_ok=True)
    for name, file in (("scrfd_500m", "det_500m.onnx"), ("w600k_mbf", "w600k_mbf.onnx")):
        os.symlink(packaged_path(builtin(name)), pack / file)
    t0 = time.perf_counter()
    app = import_vendored("insightface.app").FaceAnalysis(name=str(pack), root=str(work),
                                                          allowed_modules=["detection", "recognition"],
                                                          providers=["CPUExecutionProvider"])
    app.prepare(ctx_id=-1, det_size=(640, 640))
    t1 = time.perf_counter()
    photos = sorted(glob.glob(str(crawl / "*" / "*")))
    found = faces = 0
    for p in photos:
        img = cv2.imread(p)
        got = app.get(img) if img is not None else []
        found += bool(got)
        faces += len(got)
    end = time.perf_counter()
    return {"seconds": round(end - t0, 2), "load_seconds": round(t1 - t0, 2), "photos": len(photos),
            "photos_per_s": round(len(photos) / (end - t0), 2), "photos_with_a_face": found, "faces": faces}


def run_curate(crawl: Path, out: Path, engine: str) -> dict:
    cmd = [str(Path(sys.executable).parent / "curate"), "run", str(crawl), "--out", str(out), "--detector", "scrfd",
           "--recognizer", "w600k_mbf", "--no-progress", "--json", "--engine", engine]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"curate run failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    s = json.loads(p.stdout[p.stdout.index("{"):])
    r = s["this_run"]
    return {"seconds": round(wall, 2), "photos": s["images"], "photos_per_s": round(s["images"] / wall, 2),
            "engine": r["engine"], "spine_seconds": r["spine_seconds"], "spine_photos_per_s": r["spine_images_per_s"],
            "photos_with_a_face": s["images"] - s["reasons"].get("no_face", 0) - sum(
                v for k, v in s["reasons"].items() if k in ("decode_error", "read_error", "too_small_image")),
            "faces": s["faces"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", default=str(FACES))
    ap.add_argument("--exclude", nargs="*", default=["orl"], help="sources (folder-name prefixes) left out")
    ap.add_argument("--engine", default="auto", choices=["auto", "local", "flow"])
    ap.add_argument("--out", default="bench-out/vs_insightface.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        n = build_crawl(Path(a.faces), a.exclude, d / "crawl")
        print(f"crawl: {n} photos from {a.faces} (without {', '.join(a.exclude) or 'nothing'})", flush=True)
        ins = run_insightface(d / "crawl", d / "insightface")
        print("insightface", json.dumps(ins), flush=True)
        cur = run_curate(d / "crawl", d / "out", a.engine)
        print("curate     ", json.dumps(cur), flush=True)
    ratios = {"spine_throughput_vs_insightface": round(cur["spine_photos_per_s"] / ins["photos_per_s"], 2),
              "command_time_vs_insightface": round(cur["seconds"] / ins["seconds"], 2)}
    print(f"curate's spine: {ratios['spine_throughput_vs_insightface']}x insightface's photos/s; "
          f"the whole curate run: {ratios['command_time_vs_insightface']}x insightface's time")
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "photos": n,
                   "insightface": ins, "curate": cur, **ratios}, f, indent=1)


if __name__ == "__main__":
    main()
