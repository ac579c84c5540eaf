"""Fuzzing, the benchmark variant of tests/test_fuzz.py: N files (default 10,000) made from real
photos and mutated (curate/testing/fuzz.py: bit flips, truncations, header garbage, splices, zero runs,
wrong extensions, absurd header dimensions, CMYK/16-bit/palette/alpha, EXIF rotations, animated
GIF/WebP, polyglots, bombs), curated by `curate run` as a user starts it. Passes when it exits 0
and every file has exactly one row in the spine and in the scores.

    .venv/bin/python bench/fuzz.py [--files 10000] [--seed 0] [--photos ../shared/data/faces]

Results go to stdout and bench-out/fuzz.json (files, rows, reasons, seconds).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from curate.testing import fuzz

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photos", default=str(ROOT.parent / "shared" / "data" / "faces"))
    ap.add_argument("--work", default="bench-out")
    args = ap.parse_args()
    from curate.io.shards import ShardStore
    from curate.sample import build_sample_crawl

    work = Path(args.work).resolve() / "fuzz"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    photos_dir = args.photos
    if not os.path.isdir(photos_dir):
        photos_dir = str(work / "sample")
        build_sample_crawl(photos_dir, variants=4)
    photos = fuzz.photos_from(photos_dir, limit=300)
    crawl, out = work / "crawl", work / "out"
    t0 = time.perf_counter()
    files = fuzz.fuzzed_crawl(photos, str(crawl), args.files, seed=args.seed)
    made = time.perf_counter() - t0
    curate = os.path.join(os.path.dirname(sys.executable), "curate")
    t0 = time.perf_counter()
    r = subprocess.run([curate, "run", str(crawl), "--out", str(out), "--no-progress", "--no-audit"],
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    store = ShardStore.of(str(out)) if r.returncode == 0 else None
    rows, reasons, scored = 0, collections.Counter(), 0
    if store:
        for f in store.completed_files("images"):
            t = pq.read_table(f, columns=["source", "reason"])
            rows += len(t)
            reasons.update(t["reason"].to_pylist())
        sources = sorted(s for f in store.completed_files("images") for s in pq.read_table(f, columns=["source"])["source"].to_pylist())
        scored = len(pq.read_table(store.scores_file(store.current_scoring()), columns=["image_id"]))
        assert sources == sorted(files), "a file is missing or twice"
    summary = {"files": len(files), "photos": len(photos), "seed": args.seed, "rc": r.returncode,
               "traceback": "Traceback" in r.stdout + r.stderr, "spine_rows": rows, "scores_rows": scored,
               "reasons": dict(reasons.most_common()), "seconds_to_make": round(made, 1), "seconds_to_curate": round(seconds, 1)}
    print(json.dumps(summary, indent=1))
    if r.returncode:
        print(r.stdout[-5000:], r.stderr[-5000:])
    (Path(args.work) / "fuzz.json").write_text(json.dumps(summary, indent=1))
    ok = r.returncode == 0 and rows == scored == len(files) and not summary["traceback"]
    print("PASS: 0 crashes, a row for every file" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
