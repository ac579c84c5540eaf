"""Scoring at scale: label noise, duplicates, merges and quality over synthetic embeddings.

    .venv/bin/python bench/score.py --faces 1000000 --identities 20000 --dim 512

Embeddings are float16 (as shards store them), identities are clusters on the sphere (~35 deg
spread), 10% of faces are label noise from other identities, 1% duplicates. Reports seconds per
step and peak RSS (VmHWM), plus precision/recall of the noise flags. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.config import ScoreConfig  # noqa: E402
from curate.curation import score_table  # noqa: E402
from curate.schema import encode_embeddings  # noqa: E402


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def synth(n: int, ids: int, dim: int, noise: float, dups: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((ids, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    label = np.repeat(np.arange(ids), n // ids)
    n = len(label)
    true = label.copy()
    is_noise = rng.random(n) < noise
    true[is_noise] = (label[is_noise] + rng.integers(1, ids, is_noise.sum())) % ids
    emb = np.empty((n, dim), np.float16)
    step = 1 << 17
    for s in range(0, n, step):
        e = centers[true[s : s + step]] + rng.standard_normal((min(step, n - s), dim), dtype=np.float32) * (0.6 / np.sqrt(dim))
        emb[s : s + step] = e / np.linalg.norm(e, axis=1, keepdims=True)
    dup = rng.random(n) < dups
    src = rng.integers(0, n, dup.sum())
    emb[dup] = emb[src]
    label[dup], is_noise[dup] = label[src], is_noise[src]
    table = pa.table({
        "image_id": pa.array([f"{i:012d}" for i in range(n)]), "identity": pa.array([f"id{x:06d}" for x in label]),
        "sha1": pa.nulls(n, pa.string()), "embedding": encode_embeddings(emb),
        "feat_norm": pa.array(rng.uniform(10, 40, n).astype(np.float32)), "model_id": pa.array(["synthetic"] * n),
        "landmarks": pa.nulls(n, pa.list_(pa.float32(), 10)).fill_null(pa.scalar([0.0] * 10, pa.list_(pa.float32(), 10))),
        "face_size": pa.array(np.full(n, 100, np.float32)), "det_score": pa.array(np.full(n, 0.9, np.float32)),
        "sharpness": pa.array(rng.uniform(100, 400, n).astype(np.float32)), "keep": pa.array(np.ones(n, bool)),
        "reason": pa.array(["ok"] * n),
    })
    return table, is_noise & ~dup


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=1_000_000)
    ap.add_argument("--identities", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--dups", type=float, default=0.01)
    args = ap.parse_args()
    t0 = time.perf_counter()
    table, noisy = synth(args.faces, args.identities, args.dim, args.noise, args.dups)
    gen_s = time.perf_counter() - t0
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    scores, identities, calib = score_table(table, ScoreConfig(far_angle=75.0))
    score_s = time.perf_counter() - t0
    reason = np.array(scores["reason"].to_pylist())
    flag = np.isin(reason, ["far_from_dominant", "non_dominant_subcenter", "cross_id_conflict"])
    out = {
        "faces": len(table), "identities": args.identities, "dim": args.dim, "cores": os.cpu_count(),
        "generate_s": round(gen_s, 1), "score_s": round(score_s, 1),
        "peak_rss_mb_after_generate": round(rss_before), "peak_rss_mb": round(peak_rss_mb()),
        "noise_precision": round(float((flag & noisy).sum() / max(flag.sum(), 1)), 4),
        "noise_recall": round(float((flag & noisy).sum() / max(noisy.sum(), 1)), 4),
        "reasons": {k: int(v) for k, v in zip(*np.unique(reason, return_counts=True))},
        "impostor_angle_p1": round(calib["impostor_angle_p1"], 1),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
