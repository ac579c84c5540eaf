"""Scale and memory benchmark: N synthetic face-like images through ingest -> decode -> detect ->
align -> embed -> shards, with tiny real ONNX models (tests/tiny_models.py: an SCRFD-shaped
detector and an ArcFace-shaped embedder run by insightface's own code), on the local Ray pool.

    .venv/bin/python bench/scale.py --images 10000 100000 [--workers 2] [--shard-size 2000]

The point is the pipeline's own cost and memory, not a model's: peak RSS of the driver and of each
Ray worker must stay flat from 10K to 100K images, throughput steady across the run (images/s in
each tenth of the shard phase, from the completion markers), shard sizes sensible. Not a test.
Results go to stdout and bench-out/scale.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from spine import RSSSampler, _status  # noqa: E402


def build_crawl(dest: Path, n: int, identities: int = 1000) -> float:
    """n JPEGs (160x128, dark with noise, one bright 40 px 'face' square at a random place) in identity folders."""
    import numpy as np
    from PIL import Image

    if (dest / ".done").exists():
        return 0.0
    t0 = time.perf_counter()
    shutil.rmtree(dest, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        d = dest / f"id{i % identities:05d}"
        if i < identities:
            d.mkdir(parents=True)
        img = rng.integers(0, 30, (128, 160, 3), dtype=np.uint8)
        x, y = rng.integers(4, 116), rng.integers(4, 84)
        img[y : y + 40, x : x + 40] = 250 - rng.integers(0, 20)
        Image.fromarray(img).save(d / f"{i:07d}.jpg", quality=85)
    (dest / ".done").write_text(str(n))
    return time.perf_counter() - t0


def rate_by_tenth(out: Path) -> list[float]:
    """Images/s in each tenth of the shard phase (from the first to the last completion marker,
    by marker mtime): flat when throughput is steady over the run."""
    ms = []
    for p in glob.glob(str(out / "_completions" / "*.json")):
        with open(p) as f:
            ms.append((os.path.getmtime(p), json.load(f)["images"]))
    ms.sort()
    if len(ms) < 20:
        return []
    t0, t1 = ms[0][0], ms[-1][0]
    step = (t1 - t0) / 10
    return [round(sum(c for t, c in ms if t0 + i * step < t <= t0 + (i + 1) * step) / step, 1) for i in range(10)]


def bench_one(n: int, args, work: Path, models: dict) -> dict:
    from curate.config import DetectConfig, EmbedConfig, Resources, RunConfig
    from flows.curate_flow import curate_flow

    crawl = work / f"scale-crawl-{n}"
    build_s = build_crawl(crawl, n)
    out = work / f"scale-out-{n}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = RunConfig(shard_size=args.shard_size,
                    detect=DetectConfig(detector=f"insightface:{models['det']}", min_face_size=10),
                    embed=EmbedConfig(recognizer=f"onnx:{models['rec']}"))
    res = Resources(workers=args.workers, batch_size=args.batch_size)
    sampler = RSSSampler()
    sampler.start()
    t0 = time.perf_counter()
    s = curate_flow(input_path=str(crawl), out=str(out), config=cfg.to_dict(), resources=res.__dict__,
                    progress=False, score_config={} if args.score else None)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    shard_bytes = [os.path.getsize(p) for p in glob.glob(str(out / "images" / "*.parquet"))]
    return {
        "images": s["images"], "kept": s["kept"], "reasons": s["reasons"], "crawl_build_s": round(build_s, 1),
        "wall_s": round(wall, 1), "end_to_end_img_s": round(s["images"] / wall, 1),
        "img_s_by_tenth_of_time": rate_by_tenth(out),
        "worker_seconds": s["worker_seconds"],
        "driver_peak_rss_mb": round(_status("self").get("VmHWM", 0) / 2**20),
        "worker_peak_rss_mb": round(sampler.worker_peak / 2**20),
        "workers_total_peak_rss_mb": round(sampler.workers_total_peak / 2**20),
        "shards": s["shards"], "shard_mb_mean": round(sum(shard_bytes) / len(shard_bytes) / 2**20, 2),
        "bytes_per_image": round(sum(shard_bytes) / s["images"]),
        "score_s": s.get("curation", {}).get("score_seconds"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--score", action="store_true", help="Also score (one process over all embeddings).")
    ap.add_argument("--work", default="bench-out")
    args = ap.parse_args()
    import tiny_models

    work = Path(args.work).resolve()
    work.mkdir(exist_ok=True)
    models = {"det": tiny_models.scrfd(str(work / "tiny-det.onnx")), "rec": tiny_models.arcface(str(work / "tiny-rec.onnx"))}
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
               "args": vars(args), "runs": []}
    for n in args.images:
        r = bench_one(n, args, work, models)
        results["runs"].append(r)
        print(json.dumps(r, indent=1), flush=True)
    (work / "scale.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
