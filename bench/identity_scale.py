"""Identities at scale: the scoring steps that need every identity, on millions of synthetic
identities without their faces, with the peak memory of each process and the time.

    .venv/bin/python bench/identity_scale.py --identities 4000000 [--partitions 32] [--lookalike-tasks 2]

What curate.partitioned does between the identities step and the duplicates step, on identities
written as the identities step writes them (ids/p=*.parquet and .npy: the dominant centers,
float32), in families of look-alikes (curate/testing/synth.py family_centers), with a sample of
200,000 faces (45 deg from their centers):

  driver      every identity's name, sorted, and the codes (partitioned._identity_codes); then
              the merges and the globals file from the look-alike tasks' pairs
  centers     the one task that builds the index of every center (partitioned.center_index)
  lookalikes  per partition, its identities' 16 nearest other centers (partitioned.lookalikes):
              ``--lookalike-tasks`` of them are run and timed; the rest are estimated from them
  decide      what a decide task adds to hold the index (it reads it as every decide task does)

Each task runs in a fresh process (one at a time, as one Ray worker), and its peak RSS is its own.
The driver's peak is the bench process's from the reset after the data is written. Results to
stdout and bench-out/identity_scale.json. Not a test.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import partitioned as P
from curate.schema import encode_embeddings
from curate.testing.synth import family_centers


def _peak_mb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmHWM"))


def _task(name: str, root: str, item: int, kw: dict) -> tuple[dict, float, int]:
    t = time.perf_counter()
    if name == "decide":  # what a decide task adds: the index and its scan, read, the index made readable by id
        P._centers(P.Work(root))
        out = {}
    else:
        out = getattr(P, name)(root, item, **kw)
    return out, time.perf_counter() - t, _peak_mb()


def in_process(name: str, root: str, item: int = 0, **kw) -> tuple[dict, float, int]:
    """(the step's result, seconds, its process's peak RSS in MB), in a fresh process."""
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(_task, name, root, item, kw).result()


def write_identities(w: P.Work, n: int, parts: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    per = -(-n // parts)
    sample = []
    for p in range(parts):
        k = min(per, n - p * per)
        centers, _ = family_centers(k, dim, rng)
        names = pa.array([f"id{p:04d}_{i:07d}" for i in range(k)])
        pq.write_table(pa.table({"identity": names, "faces": pa.array(rng.integers(2, 20, k))}), w.path("ids", f"p={p:05d}.parquet"))
        np.save(w.path("ids", f"p={p:05d}.npy"), centers)
        m = 200_000 // parts  # the sample: faces 45 deg from their center
        who = rng.integers(0, k, m)
        g = rng.standard_normal((m, dim), dtype=np.float32)
        g -= np.einsum("nd,nd->n", g, centers[who])[:, None] * centers[who]
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        emb = np.cos(np.radians(45)) * centers[who] + np.sin(np.radians(45)) * g
        sample.append(pa.table({"image_id": pa.array([f"{p}-{i}" for i in range(m)]), "identity": names.take(pa.array(who)),
                                "embedding": encode_embeddings(emb.astype(np.float32))}))
    pq.write_table(pa.concat_tables(sample), w.path("sample", "c=00000.parquet"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--identities", type=int, nargs="+", default=[4_000_000])
    ap.add_argument("--partitions", type=int, default=32, help="As many as the crawl's 250K-image partitions.")
    ap.add_argument("--lookalike-tasks", type=int, default=2,
                    help="Look-alike tasks to time (0: none; at 4M identities the scan makes each one long: about 10 ms an identity, from 2.4 at 1M).")
    ap.add_argument("--dir", default="bench-out/identity-scale")
    args = ap.parse_args()
    runs = []
    for n in args.identities:
        root = Path(args.dir) / f"ids-{n}"
        shutil.rmtree(root, ignore_errors=True)
        w = P.Work(str(root))
        t = time.perf_counter()
        write_identities(w, n, args.partitions, 512, seed=0)
        out = {"identities": n, "partitions": args.partitions, "write_s": round(time.perf_counter() - t, 1)}
        with open("/proc/self/clear_refs", "w") as f:  # the driver's peak from here on
            f.write("5")
        t = time.perf_counter()
        sample = pq.read_table(w.path("sample", "c=00000.parquet"), columns=["identity"])
        names, sizes = P._identity_codes(w, args.partitions, sample)
        out["driver_codes_s"] = round(time.perf_counter() - t, 1)
        r, s, rss = in_process("center_index", str(root))
        out.update({"centers_s": round(s, 1), "centers_task_peak_mb": rss, "impostor_p1": round(r["impostor_p1"], 2)})
        out["index_mb"] = round(os.path.getsize(w.path("centers.faiss")) / 2**20)
        looks, secs, peaks = [], [], []
        for p in range(args.lookalike_tasks):
            r, s, rss = in_process("lookalikes", str(root), p, merge_cos=0.5)
            looks.append(r)
            secs.append(s)
            peaks.append(rss)
        if secs:  # --lookalike-tasks 0: the index, the decide task and the driver alone
            out.update({"lookalike_task_s": [round(x, 1) for x in secs], "lookalike_task_peak_mb": max(peaks),
                        "lookalikes_all_partitions_2_workers_s_estimated": round(np.mean(secs) * args.partitions / 2)})
        _, s, rss = in_process("decide", str(root))
        out.update({"decide_index_load_s": round(s, 1), "decide_task_peak_mb_index_alone": rss})
        t = time.perf_counter()
        a, b, sims = (np.concatenate([np.zeros(0)] + [np.asarray(r[k]) for r in looks]) for k in "abs")
        from curate import curation as C
        from curate.config import ScoreConfig
        from curate.stages import nearest, score

        th = score.thresholds(out["impostor_p1"], ScoreConfig(), None)
        P._write_globals(w, C.Globals(names, th, *C.merges_of(names, sizes, nearest.merge_candidates(a, b, sims))))
        out["driver_globals_s"] = round(time.perf_counter() - t, 1)
        out["driver_peak_mb"] = _peak_mb()
        print(json.dumps(out), flush=True)
        runs.append(out)
        shutil.rmtree(root, ignore_errors=True)
    machine = {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    Path("bench-out").mkdir(exist_ok=True)
    with open("bench-out/identity_scale.json", "w") as f:
        json.dump({"machine": machine, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
