"""Scoring at scale: label noise, duplicates, merges and quality over synthetic embeddings, partition
by partition on Ray (curate.partitioned), or all in one process (``--in-memory``, the old path).

    .venv/bin/python bench/score.py --faces 1000000 3000000 --identities 200000 [--dir DIR]

Embeddings are 512-d float16 (as shards store them), written shard by shard (curate/testing/synth.py
EmbeddingCrawl: identities are clusters on the sphere, 10% label noise, 1% duplicates of which
half byte-identical, shuffled over shards; a fifth of the re-saved copies filed under another
identity with their photo hash 1-2 bits away: ``cross_copy_recall``, the share joined to their photo). Reports wall seconds per step, peak RSS of the driver
(also before and during each step) and of the largest Ray worker, and the flags' precision and recall against the truth. Not a test.
Results go to stdout and bench-out/score.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from curate import partitioned as P
from curate.config import ScoreConfig
from curate.curation import READ
from curate.reasons import LABEL_NOISE
from curate.scoring import score_table
from curate.testing.synth import EmbeddingCrawl

LABEL = list(LABEL_NOISE)
CROSS = 0.2  # of the re-saved copies: filed under another identity, 1-2 bits away in the 64-bit photo hash


def _status(pid: str) -> dict:
    try:
        with open(f"/proc/{pid}/status") as f:
            return {k: int(v.split()[0]) // 1024 for k, v in (line.split(":", 1) for line in f) if v.strip().endswith("kB")}
    except OSError:
        return {}


class WorkerRSS(threading.Thread):
    """Peak RSS (MB) of any Ray worker process, sampled every 0.5 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop, self.peak = threading.Event(), 0

    def run(self):
        while not self.stop.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read(64)
                except OSError:
                    continue
                if cmd.startswith(b"ray::"):
                    self.peak = max(self.peak, _status(pid).get("VmHWM", 0))
            self.stop.wait(0.5)


def write_crawl(crawl: EmbeddingCrawl, d: Path) -> list[tuple[int, str]]:
    (d / "images").mkdir(parents=True, exist_ok=True)
    files = []
    for s in range(crawl.shards):
        f = d / "images" / f"part-{s:06d}-bench.parquet"
        if not f.exists():
            tmp = f.with_suffix(".tmp")
            pq.write_table(crawl.shard(s), tmp)
            tmp.rename(f)
        files.append((s, str(f)))
    return files


def flags(crawl: EmbeddingCrawl, reason: np.ndarray, dup_sim: np.ndarray, dup_cos: float, dup_of: np.ndarray) -> dict:
    scored = ~crawl.no_face
    cross = np.flatnonzero(crawl.cross_copy & scored & ~crawl.no_face[np.maximum(crawl.src, 0)])
    src = crawl.src[cross]
    name = np.char.mod("%012d", np.arange(crawl.n)).astype(object)  # image ids, as EmbeddingCrawl names them
    root = np.where(dup_of == None, name, dup_of)  # noqa: E711 - a cluster's rows point at the face that stays
    joined = root[cross] == root[src]
    flag = np.isin(reason, LABEL)
    noisy = crawl.noise & (~crawl.dup | crawl.cross_copy) & scored  # a copy filed under another identity is mislabelled
    copies = crawl.dup & ~crawl.cross_copy & scored & ~crawl.no_face[np.maximum(crawl.src, 0)]
    found = np.nan_to_num(dup_sim) >= dup_cos
    return {"label_precision": round(float((flag & noisy).sum() / max(flag.sum(), 1)), 4),
            "label_recall": round(float((flag & noisy).sum() / max(noisy.sum(), 1)), 4),
            "dup_recall": round(float((found & copies).sum() / max(copies.sum(), 1)), 4),
            "cross_copies": len(cross), "cross_copy_recall": round(float(joined.mean()), 4) if len(cross) else None,
            "duplicate_flags": int((reason == "duplicate").sum())}


def run_one(n: int, ids: int, base: Path, in_memory: bool, keep: bool) -> dict:
    crawl = EmbeddingCrawl(n, ids, dim=512, shard_size=50_000, cross=CROSS)
    d = base / f"crawl-{n}-{ids}"
    t0 = time.perf_counter()
    files = write_crawl(crawl, d)
    gen_s = time.perf_counter() - t0
    cfg = ScoreConfig()
    del crawl.centers  # the generator's, not the scoring's
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM from here on: the scoring's peak
        f.write("5")
    out = {"faces": n, "identities": ids, "dim": 512, "shards": len(files), "generate_s": round(gen_s, 1),
           "crawl_gb": round(sum(os.path.getsize(f) for _, f in files) / 1e9, 2)}
    if in_memory:
        import pyarrow as pa

        t0 = time.perf_counter()
        t = pa.concat_tables([pq.read_table(f, columns=READ) for _, f in files])
        scores, _, calib = score_table(t, cfg)
        out["score_s"] = round(time.perf_counter() - t0, 1)
        out["driver_peak_rss_mb"] = _status("self")["VmHWM"]
        reason, sim = np.array(scores["reason"].to_pylist()), scores["dup_sim"].to_numpy(zero_copy_only=False)
        dup_of = np.array(scores["dup_of"].to_pylist(), object)
    else:
        from flows.ray_exec import init_ray, ray_map

        init_ray()
        sampler = WorkerRSS()
        sampler.start()
        work = d / "_scoring" / "bench"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(d / "curated", ignore_errors=True)
        (d / "curated").mkdir()
        steps, driver, t_all = {}, {}, time.perf_counter()

        def driver_peak(label):  # the driver's peak RSS since the last mark (MB), then reset
            driver[label] = max(driver.get(label, 0), _status("self")["VmHWM"])
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

        def timed(fn, items):  # seconds per step, and the driver's peak before and during it
            name = fn.func.__name__
            driver_peak(f"before {name}")
            t = time.perf_counter()
            r = ray_map(fn, items)
            steps[name] = round(steps.get(name, 0) + time.perf_counter() - t, 1)
            driver_peak(f"during {name}")
            return r

        from curate import reviews as R

        w, calib, _ = P.score_partitioned(str(work), str(d), files, cfg, None, R.REVIEWS.empty_table(), "bench",
                                          mapper=timed)
        P.stream_outputs(w, str(d / "scores.parquet"), str(d / "identities.parquet"))
        out["score_s"] = round(time.perf_counter() - t_all, 1)
        driver_peak("after the steps")
        out["driver_peak_rss_mb"] = max(driver.values())
        out["driver_peak_rss_mb_by_step"] = driver
        out["steps_s"] = steps
        out["partitions"], out["groups"] = w.plan["partitions"], w.plan["groups"]
        sampler.stop.set()
        out["worker_peak_rss_mb"] = sampler.peak
        P.remove(w)
        scores = pq.read_table(d / "scores.parquet", columns=["reason", "dup_sim", "dup_of"])
        reason, sim = np.array(scores["reason"].to_pylist()), scores["dup_sim"].to_numpy(zero_copy_only=False)
        dup_of = np.array(scores["dup_of"].to_pylist(), object)
        if not keep:
            shutil.rmtree(d / "curated", ignore_errors=True)
    out["seconds_per_million"] = round(out["score_s"] / (n / 1e6), 1)
    out["far_angle"], out["dup_cos"] = round(calib["far_angle"], 2), round(calib["dup_cos"], 4)
    out.update(flags(crawl, reason, sim, calib["dup_cos"], dup_of))
    out["reasons"] = {k: int(v) for k, v in zip(*np.unique(reason, return_counts=True))}
    if not keep:
        shutil.rmtree(d, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--identities", type=int, default=200_000)
    ap.add_argument("--dir", default="bench-out/score-crawls", help="Where the synthetic shards go (GBs).")
    ap.add_argument("--in-memory", action="store_true", help="score_table in one process instead.")
    ap.add_argument("--keep", action="store_true", help="Keep the crawls and curated shards.")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    results = []
    for n in args.faces:
        r = run_one(n, min(args.identities, n // 5), Path(args.dir), args.in_memory, args.keep)
        print(json.dumps(r), flush=True)
        results.append(r)
    machine = {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    Path("bench-out").mkdir(exist_ok=True)
    with open("bench-out/score.json", "w") as f:
        json.dump({"machine": machine, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
