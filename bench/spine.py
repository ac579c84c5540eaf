"""Benchmark of the curation spine: images/s per stage and end to end, peak RSS, steadiness.

    .venv/bin/python bench/spine.py --images 2000 10000 [--workers 2] [--detector yunet] [--faces ../shared/data/faces]
    .venv/bin/python bench/spine.py --tiny-models --images 10000 100000 [--score]     # scale and memory

For each size it builds a crawl of real face photos (seeded variants of packaged photos, ~8
identities, see curate.sample; or, with --faces, the web photos of an identity-folder tree), runs
the full Prefect flow over Ray with the default models, and reports:
  end to end   images / wall seconds of the flow (plan, Ray start, shards, views)
  per stage    images / summed worker seconds of that stage (throughput of one worker core)
  peak RSS     of the driver and of the largest Ray worker (VmHWM), sampled from /proc
  by tenth     images/s in each tenth of the shard phase (from the completion markers): flat when
               throughput is steady over the run
With --tiny-models the crawl is synthetic (dark images with one bright 40 px square, 1,000
identities) and the models are tiny real ONNX ones (curate.testing.tiny_models, run by insightface's
own code): the pipeline's own cost and memory, not a model's, which must stay flat from 10K to
100K images. Not a test: numbers depend on the machine. Results go to stdout and
bench-out/spine.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import threading
import time
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _status(pid: str) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "VmHWM")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class RSSSampler(threading.Thread):
    """Peak RSS of the driver and of each Ray worker running CurateStage, every 0.25 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.worker_peak = 0
        self.workers_total_peak = 0

    def run(self):
        while not self.stop.is_set():
            total = 0
            for pid in filter(str.isdigit, os.listdir("/proc")):
                if "CurateStage" in _cmdline(pid):
                    s = _status(pid)
                    self.worker_peak = max(self.worker_peak, s.get("VmHWM", 0))
                    total += s.get("VmRSS", 0)
            self.workers_total_peak = max(self.workers_total_peak, total)
            self.stop.wait(0.25)


WEB = ("lfw__", "opencvcourse__", "deepface__", "facerec__", "openface__", "sportsceleb__")


def build_crawl(dest: Path, n: int, faces: str | None = None) -> tuple[int, dict]:
    """The sample crawl (packaged photos and variants), or ``n`` files copied round-robin from the
    web-photo identity folders of ``faces`` (../shared/data/faces: LFW is 250 px, the others
    mostly 200-1024 px), each identity split into copies so identities stay ~10 images."""
    from curate.sample import base_photos, build_sample_crawl

    if not dest.exists() and faces:
        files = sorted(p for p in Path(faces).glob("*/*") if p.parent.name.startswith(WEB))
        for k in range(n):
            p = files[k % len(files)]
            d = dest / f"{p.parent.name}-{k // len(files)}"
            d.mkdir(parents=True, exist_ok=True)
            (d / p.name).write_bytes(p.read_bytes())
    elif not dest.exists():
        build_sample_crawl(str(dest), variants=max(1, n // len(base_photos()) - 1), noise=False)
    files = [p for p in dest.rglob("*") if p.is_file()]
    from PIL import Image

    sides = sorted(min(Image.open(p).size) for p in files[:: max(1, len(files) // 200)])
    return len(files), {"min_side_p10": sides[len(sides) // 10], "min_side_median": sides[len(sides) // 2],
                        "min_side_p90": sides[9 * len(sides) // 10]}


def build_squares(dest: Path, n: int, identities: int = 1000) -> None:
    """n JPEGs (160x128, dark with noise, one bright 40 px 'face' square at a random place) in identity folders."""
    import numpy as np
    from PIL import Image

    if (dest / ".done").exists():
        return
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


def bench_one(n: int, args, work: Path, tiny: dict | None = None) -> dict:
    from curate.config import DetectConfig, EmbedConfig, Resources, RunConfig
    from flows.curate_flow import curate_flow

    kind = "-tiny" if tiny else "-faces" if args.faces else ""
    crawl = work / f"crawl-{n}{kind}"
    t0 = time.perf_counter()
    if tiny:
        build_squares(crawl, n)
        sizes = {"min_side": 128}
        cfg = RunConfig(shard_size=args.shard_size,
                        detect=DetectConfig(detector=f"insightface:{tiny['det']}", min_face_size=10),
                        embed=EmbedConfig(recognizer=f"onnx:{tiny['rec']}"))
    else:
        _, sizes = build_crawl(crawl, n, args.faces)
        cfg = RunConfig(shard_size=args.shard_size, detect=DetectConfig(detector=args.detector, upsample=args.upsample),
                        embed=EmbedConfig(recognizer=args.recognizer))
    build_s = time.perf_counter() - t0
    out = work / f"out-{n}{kind}"
    shutil.rmtree(out, ignore_errors=True)
    res = Resources(workers=args.workers, threads_per_worker=args.threads, batch_size=args.batch_size)
    sampler = RSSSampler()
    sampler.start()
    t0 = time.perf_counter()
    s = curate_flow(input_path=str(crawl), out=str(out), config=cfg.to_dict(), resources=res.__dict__,
                    progress=False, score_config={} if args.score else None)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    secs = s["worker_seconds"]
    busy = sum(secs.values())
    return {
        "images": s["images"], "crawl_build_s": round(build_s, 1), "image_sides": sizes,
        "wall_s": round(wall, 1), "end_to_end_img_s": round(s["images"] / wall, 2),
        "steady_img_s": round(s["images"] / busy * args.workers * args.threads, 2),  # all busy, no start-up
        "per_stage_img_s_per_core": {k: round(s["images"] / v, 1) for k, v in secs.items() if v > 0},
        "stage_share": {k: round(v / busy, 3) for k, v in secs.items()},
        "kept": s["kept"], "reasons": s["reasons"],
        "driver_peak_rss_mb": round(_status("self").get("VmHWM", 0) / 2**20),
        "worker_peak_rss_mb": round(sampler.worker_peak / 2**20),
        "workers_total_peak_rss_mb": round(sampler.workers_total_peak / 2**20),
        "img_s_by_tenth_of_time": rate_by_tenth(out),
        "shards": s["shards"],
        "shard_mb": round(sum(f.stat().st_size for f in (out / "images").glob("*.parquet")) / 2**20 / s["shards"], 2),
        "bytes_per_image": round(sum(f.stat().st_size for f in (out / "images").glob("*.parquet")) / s["images"]),
        "score_s": s.get("curation", {}).get("score_seconds"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--detector", default="yunet")
    ap.add_argument("--recognizer", default="edgeface_s")
    ap.add_argument("--threads", type=int, default=1, help="CPUs and onnxruntime threads per worker")
    ap.add_argument("--faces", default=None, help="Build the crawl from the web photos of this identity-folder tree")
    ap.add_argument("--upsample", type=int, default=1)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tiny-models", action="store_true",
                    help="Synthetic crawl and tiny real ONNX models: the pipeline's own cost and memory")
    ap.add_argument("--score", action="store_true", help="Also score the run.")
    ap.add_argument("--work", default="bench-out")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(exist_ok=True)
    tiny = None
    if args.tiny_models:
        from curate.testing import tiny_models

        tiny = {"det": tiny_models.scrfd(str(work / "tiny-det.onnx")), "rec": tiny_models.arcface(str(work / "tiny-rec.onnx"))}
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
               "args": vars(args), "runs": []}
    for n in args.images:
        r = bench_one(n, args, work, tiny)
        results["runs"].append(r)
        print(json.dumps(r, indent=1), flush=True)
    (work / "spine.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
