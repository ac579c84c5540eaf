"""The benchmark's quality EDC on people the card never saw (issue 28).

    .venv/bin/python bench/quality_unseen.py --bench B [--bench W ...] [--faces ../shared/data/faces]
                                             [--splits 12] [--held-out 0.4]

`curate bench` measures quality on crawls built from the same people as the default card's
reference (../shared/data/faces), so its EDC includes what the card's quality model learned of
them (the embedding probe above all). This script takes that out:

1. Runs the spine over the reference (``--faces``) as `curate calibrate` does (near-duplicate and
   degraded copies included), once.
2. For each split: holds out a share of the reference's people (``--held-out``), calibrates on the
   others exactly as `curate calibrate` does (``calibration.calibrate_reference``: the signals
   chosen by held-out EDC, the probe, the thresholds), and re-scores the quality of each benchmark
   run's faces with that model (the face the scoring judged: its signals and embedding).
3. On the held-out people's faces of every run (``--bench``: `curate bench` output directories,
   made with the same detector and recognizer), the benchmark's EDC (``curate.benchmark.edc``:
   FNMR at FMR 1e-3 over 0-30% discarded) of that quality, of the shipped card's quality and of
   the detector score alone; the ratio to the detector score per run, then mean over splits,
   tuning seeds and the held-out seed apart.

Prints a table; writes bench-out/quality_unseen.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def subset(ref, people: set):
    """The reference with only ``people``'s photos and their copies (indices remapped)."""
    from curate.calibration import Reference

    keep = np.isin(np.asarray(ref.rows["identity"].to_pylist(), object), list(people))
    new = np.cumsum(keep) - 1
    pairs = ref.dup_pairs[keep[ref.dup_pairs[:, 0]] & keep[ref.dup_pairs[:, 1]]]
    d = ref.degraded.filter(pa.array(keep[ref.degraded["original"].to_numpy()]))
    d = d.set_column(d.schema.get_field_index("original"), "original", pa.array(new[d["original"].to_numpy()], pa.int64()))
    return Reference(ref.rows.filter(pa.array(keep)), new[pairs], d)


def run_faces(run: str) -> tuple[pa.Table, dict, np.ndarray]:
    """A benchmark run's rows joined with their truth, the quality signals of the face each row
    carries, and its unit embedding (zeros where none)."""
    from curate import benchmark as B
    from curate.calibration import _signals
    from curate.io.shards import ShardStore
    from curate.schema import decode_embeddings
    from curate.stats import unit

    t = B.joined(run, pq.read_table(os.path.join(run, "truth.parquet")))
    store = ShardStore.of(run)
    rows = pa.concat_tables([pq.read_table(f) for f in store.view_files(store.current_scoring())["curated"]])
    rows = rows.take(pc.index_in(t["image_id"], value_set=rows["image_id"]))
    ok = np.asarray(pc.is_valid(t["embedding"]).to_numpy(zero_copy_only=False), bool)
    emb = np.zeros((len(t), 0), np.float32)
    if ok.any():
        e = decode_embeddings(t["embedding"].filter(pa.array(ok))).astype(np.float32)
        emb = np.zeros((len(t), e.shape[1]), np.float32)
        emb[ok] = unit(e)
    return t, _signals(rows), emb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", action="append", required=True, help="A `curate bench` output directory (repeatable).")
    ap.add_argument("--faces", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"))
    ap.add_argument("--detector", default="yunet")
    ap.add_argument("--recognizer", default="edgeface_s")
    ap.add_argument("--splits", type=int, default=12)
    ap.add_argument("--held-out", type=float, default=0.4, help="Share of the reference's people held out of each fit.")
    args = ap.parse_args()
    from curate import benchmark as B
    from curate.calibration import calibrate_reference, reference_rows
    from curate.config import DetectConfig, EmbedConfig, RunConfig
    from curate.curation import quality_of
    from curate.pipeline import load_models

    t0 = time.perf_counter()
    cfg = RunConfig(detect=DetectConfig(detector=args.detector), embed=EmbedConfig(recognizer=args.recognizer))
    ref = reference_rows(args.faces, load_models(cfg), cfg)  # curate calibrate's defaults
    people = np.unique(np.asarray(ref.rows["identity"].to_pylist(), object).astype(str))
    runs = {b: {int(p.name.split("-")[1]): str(p / "run") for p in sorted(Path(b).glob("seed-*"))} for b in args.bench}
    meta = {b: json.load(open(os.path.join(b, "bench.json"))) for b in args.bench}
    faces = {(b, s): run_faces(r) for b, seeds in runs.items() for s, r in seeds.items()}
    out = {"machine": platform.processor() or platform.machine(), "splits": [], "faces": args.faces,
           "held_out_share": args.held_out, "models": f"{args.recognizer} + {args.detector}"}
    for k in range(args.splits):
        held = people[np.random.default_rng(1000 + k).permutation(len(people)) < round(args.held_out * len(people))]
        model = calibrate_reference(subset(ref, set(people) - set(held)), seed=k)["quality"]["match"]
        split = {"signals": model["signals"], "runs": {}}
        for (b, s), (t, sig, emb) in faces.items():
            q = quality_of(sig, {"quality": {"match": model}}, emb)
            mine = pa.array(np.isin(np.asarray(t["truth_person"].to_pylist(), object).astype(str), held))
            u = t.append_column("unseen", pa.array(q)).filter(mine)
            e = B.edc_summary(B.edc(u, signals=("unseen", "quality", "det_score_pct")))
            split["runs"][f"{b}:{s}"] = {**e, "unseen_vs_det": round(e["unseen"] / e["det_score_pct"] - 1, 4),
                                         "shipped_vs_det": round(e["quality"] / e["det_score_pct"] - 1, 4)}
        out["splits"].append(split)
        print(f"split {k}: signals {'+'.join(model['signals'])}", flush=True)
    print(f"\n{'bench':40s} {'seeds':>8s} {'unseen vs det':>14s} {'shipped vs det':>15s}   (EDC ratio - 1; negative: better)")
    for b in args.bench:
        hold = meta[b].get("held_out_seed")
        for name, seeds in (("tuning", [s for s in runs[b] if s != hold]), ("held-out", [s for s in runs[b] if s == hold])):
            if not seeds:
                continue
            u = [sp["runs"][f"{b}:{s}"]["unseen_vs_det"] for sp in out["splits"] for s in seeds]
            w = [sp["runs"][f"{b}:{s}"]["shipped_vs_det"] for sp in out["splits"] for s in seeds]
            out.setdefault("summary", {})[f"{b}:{name}"] = {"unseen_vs_det": round(float(np.mean(u)), 4),
                                                             "unseen_vs_det_std": round(float(np.std(u)), 4),
                                                             "shipped_vs_det": round(float(np.mean(w)), 4)}
            print(f"{b:40s} {name:>8s} {np.mean(u):+14.1%} {np.mean(w):+15.1%}   (+/- {np.std(u):.1%} over runs and splits)")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    Path("bench-out").mkdir(exist_ok=True)
    Path("bench-out/quality_unseen.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
