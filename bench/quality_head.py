"""Does a quality head trained here beat the simple quality signals? (issue 17)

    .venv/bin/python bench/quality_head.py [--faces ../shared/data/faces] [--seeds 0 1 2]
                                           [--export models/quality/edgeface_s-magface.onnx]

1. Runs the real spine (default detector and recognizer) over every photo of ``--faces`` and one
   degraded copy per photo and degradation (``curate.degrade``), cached in ``--work``.
2. For each seed: holds out 20% of the identities, trains the MagFace head
   (``models.quality_head``) on the rest (photos and the degraded copies whose face was found),
   and fits the shipped quality (the chance of matching, ``curate.quality``) on the same people,
   then on the held-out people measures, for each signal, the error-versus-discard curve (FNMR at
   FMR 1e-3 as the lowest-quality share is discarded; mean over 0-30%) and the AUC of "degraded
   copy below its original".
3. Prints mean and spread over seeds; writes ``--work/quality_head.json``. ``--export`` writes the
   head trained on every identity (for ``--quality-model``) with its reference quantiles.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def pool(faces: str, work: str, detector: str, recognizer: str) -> pa.Table:
    """Photos and degraded copies through the spine: one row per face found, with ``original``
    (row of the photo a copy was made from, -1 for photos) and ``kind``."""
    path = os.path.join(work, f"pool3-{detector}-{recognizer}.parquet")
    if os.path.exists(path):
        return pq.read_table(path)
    from curate.calibration import reference_rows
    from curate.config import DetectConfig, EmbedConfig, RunConfig
    from curate.pipeline import load_models

    cfg = RunConfig(detect=DetectConfig(detector=detector), embed=EmbedConfig(recognizer=recognizer))
    t0 = time.time()
    ref = reference_rows(faces, load_models(cfg), cfg, duplicates=0, degraded=10**9, seed=0)
    cols = ["identity", "embedding", "feat_norm", "det_score", "sharpness", "brightness", "contrast", "detail", "face_size",
            "landmarks"]
    rows = ref.rows.select(cols).append_column("original", pa.array(np.full(len(ref.rows), -1), pa.int64())) \
        .append_column("kind", pa.array(["photo"] * len(ref.rows)))
    bad = ref.degraded.filter(ref.degraded["keep"]).select(cols + ["original", "kind"])
    t = pa.concat_tables([rows, bad])
    os.makedirs(work, exist_ok=True)
    pq.write_table(t, path)
    print(f"pool: {len(rows)} photos, {len(bad)} degraded copies with a face ({time.time() - t0:.0f} s)", flush=True)
    return t


def raw_features(t: pa.Table) -> np.ndarray:
    from curate.schema import decode_embeddings

    emb = decode_embeddings(t["embedding"]).astype(np.float32)
    return emb * t["feat_norm"].to_numpy().astype(np.float32)[:, None]


CALIBRATE_DEGRADED = 200  # `curate calibrate --degraded`: photos degraded every way, for the quality fit


def shipped_quality(t: pa.Table, train: np.ndarray, test: np.ndarray, cal: dict, seed: int) -> np.ndarray:
    """The shipped quality (curate.quality, the chance of matching) fitted as `curate calibrate`
    fits it (every photo, and the degraded copies of ``CALIBRATE_DEGRADED`` of them, its default),
    but on the training people only, then applied to the held-out people: the head's own
    conditions."""
    from curate import quality
    from curate.calibration import _signals, match_model
    from curate.schema import decode_embeddings
    from curate.stats import unit

    original = t["original"].to_numpy()
    photos = np.flatnonzero(train & (original < 0))
    degraded = np.random.default_rng(seed).choice(photos, min(CALIBRATE_DEGRADED, len(photos)), replace=False)
    copies = np.flatnonzero(train & (original >= 0) & np.isin(original, degraded))
    pos = {int(r): k for k, r in enumerate(photos)}
    emb = unit(decode_embeddings(t["embedding"]).astype(np.float64))
    codes = np.unique(np.array(t["identity"].to_pylist(), object)[photos].astype(str), return_inverse=True)[1]
    sig = _signals(t)
    values = {k: np.concatenate([v[photos], v[copies]]) for k, v in sig.items()}
    model = match_model(cal, emb[photos], codes, emb[copies],
                        np.array([pos[int(o)] for o in original[copies]], np.int64), values, seed)
    return 100 * quality.probability(model, {k: v[test] for k, v in sig.items()}, emb[test])


def pct(v: np.ndarray) -> np.ndarray:
    """Percentile rank within the set (0-100)."""
    order = np.argsort(np.argsort(v, kind="stable"), kind="stable")
    return 100.0 * (order + 0.5) / len(v)


def auc_below(sig: np.ndarray, original: np.ndarray) -> float:
    copies = np.flatnonzero(original >= 0)
    if not len(copies):
        return float("nan")
    a, b = sig[copies], sig[original[copies]]
    return float(np.mean((a < b) + 0.5 * (a == b)))


def evaluate(t: pa.Table, signals: dict[str, np.ndarray], seed: int) -> dict:
    """EDC (mean FNMR at FMR 1e-3 over 0-30% discarded) on two populations of the held-out people:
    their photos alone (the quality spread real photos have: lab lighting, web), and their photos
    with one degraded copy of each (where found); and the AUC of copies below their originals."""
    from curate.benchmark import edc, edc_summary

    original = t["original"].to_numpy()
    rng = np.random.default_rng(seed)
    one = {}
    for i in rng.permutation(np.flatnonzero(original >= 0)):
        one.setdefault(int(original[i]), int(i))
    pops = {"photos": original < 0, "photos+copies": (original < 0) | np.isin(np.arange(len(t)), list(one.values()))}
    out = {"auc": {k: round(auc_below(v, original), 4) for k, v in signals.items()}}
    for name, m in pops.items():
        s = t.filter(pa.array(m))
        tab = pa.table({"spine_reason": ["ok"] * len(s), "truth_person": s["identity"], "embedding": s["embedding"],
                        **{k: pa.array(v[m].astype(np.float32)) for k, v in signals.items()}})
        out[f"edc {name}"] = edc_summary(edc(tab, signals=tuple(signals)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "faces"))
    ap.add_argument("--work", default="bench-out/quality-head")
    ap.add_argument("--detector", default="yunet")
    ap.add_argument("--recognizer", default="edgeface_s")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--export", help="also train on every identity and write the ONNX head here")
    ap.add_argument("--half", type=int, metavar="SEED",
                    help="train the exported head on a random half of the identities only and list them in "
                         "EXPORT.train-people.txt: `curate bench --exclude` each of them measures the head on "
                         "people it never saw")
    ap.add_argument("--signals", nargs="+", default=["learned", "det_score"],
                    help="quality signals the exported card names (geometric mean of their percentiles)")
    args = ap.parse_args()

    from models import quality_head
    from models.cards import builtin, file_sha256, pick_calibration

    t = pool(args.faces, args.work, args.detector, args.recognizer)
    raw = raw_features(t)
    ids = np.array(t["identity"].to_pylist(), object)
    people = np.unique(ids)
    cal, _ = pick_calibration(builtin(args.recognizer), args.detector)
    results = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        held = set(rng.choice(people, max(1, len(people) // 5), replace=False).tolist())
        test = np.isin(ids, list(held))
        t0 = time.time()
        head = quality_head.train(raw[~test], ids[~test], epochs=args.epochs, seed=seed)
        secs = time.time() - t0
        tt = t.filter(pa.array(test))
        # originals re-indexed into the held-out table
        where = {int(i): k for k, i in enumerate(np.flatnonzero(test))}
        orig = np.array([where.get(int(o), -1) if o >= 0 else -1 for o in tt["original"].to_numpy()])
        tt = tt.set_column(tt.schema.get_field_index("original"), "original", pa.array(orig))
        vals = {"norm": tt["feat_norm"].to_numpy().astype(np.float64),
                "det_score": tt["det_score"].to_numpy().astype(np.float64),
                "sharpness": tt["sharpness"].to_numpy().astype(np.float64)}
        learned = quality_head.norms(head, raw[test]).astype(np.float64)
        t1 = time.time()
        quality_head.norms(head, raw[test])
        per_face_ms = (time.time() - t1) / max(test.sum(), 1) * 1000
        signals = {"learned_norm": learned, "norm": vals["norm"], "det_score": vals["det_score"],
                   "sharpness": vals["sharpness"], "quality (shipped)": shipped_quality(t, ~test, test, cal, seed),
                   "learned+det_score": np.sqrt(pct(learned) * pct(vals["det_score"]))}
        r = evaluate(tt, signals, seed)
        r.update({"seed": seed, "held_out_people": len(held), "held_out_faces": int(test.sum()),
                  "train_faces": int((~test).sum()), "train_s": round(secs, 1), "head_ms_per_face": round(per_face_ms, 4)})
        print(json.dumps(r), flush=True)
        results.append(r)
    summary = {}
    for part in ("edc photos", "edc photos+copies", "auc"):
        summary[part] = {k: {"mean": round(float(np.mean([r[part][k] for r in results])), 4),
                             "std": round(float(np.std([r[part][k] for r in results])), 4)} for k in results[0][part]}
    out = {"faces": os.path.abspath(args.faces), "detector": args.detector, "recognizer": args.recognizer,
           "seeds": args.seeds, "epochs": args.epochs, "runs": results, "summary": summary}
    with open(os.path.join(args.work, "quality_head.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"{'signal':<20} {'EDC photos':>18} {'EDC photos+copies':>18} {'AUC copy < original':>20}")
    for k in summary["auc"]:
        cells = [summary[p][k] for p in ("edc photos", "edc photos+copies", "auc")]
        print(f"{k:<20} " + " ".join(f"{c['mean']:>10.4f} ± {c['std']:.4f}" for c in cells))
    if args.export:
        use = np.ones(len(ids), bool)
        if args.half is not None:
            half = set(np.random.default_rng(args.half).choice(people, len(people) // 2, replace=False).tolist())
            use = np.isin(ids, list(half))
            with open(os.path.splitext(args.export)[0] + ".train-people.txt", "w") as f:
                f.write("\n".join(sorted(half)) + "\n")
        raw, ids, t = raw[use], ids[use], t.filter(pa.array(use))
        head = quality_head.train(raw, ids, epochs=args.epochs, seed=0)
        os.makedirs(os.path.dirname(os.path.abspath(args.export)), exist_ok=True)
        quality_head.export(head, args.export, raw.shape[1])
        photos = t["original"].to_numpy() < 0
        q = quality_head.norms(head, raw[photos])
        card = {"name": os.path.splitext(os.path.basename(args.export))[0], "task": "quality",
                "recognizer": args.recognizer, "detector": args.detector, "loss": "magface",
                "reference": {"faces": int(photos.sum()), "set": os.path.abspath(args.faces)},
                "signals": args.signals, "sha256": file_sha256(args.export),
                "quantiles": [float(np.float32(v)) for v in np.quantile(q, np.linspace(0, 1, 101))], "summary": summary}
        with open(os.path.splitext(args.export)[0] + ".card.json", "w") as f:
            json.dump(card, f, indent=1)
        print("exported", args.export)


if __name__ == "__main__":
    main()
