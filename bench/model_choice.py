"""Benchmark of the face models on real labelled faces: which detector and recognizer to default to.

    .venv/bin/python bench/model_choice.py [--faces ../shared/data/faces] [--out bench-out/models.json]

Measures, on every photo of an identity-folder tree (default ../shared/data/faces: lab sets ORL,
Yale, Yale B, and web photos), with one onnxruntime thread per model:

detectors    photos with a face found, per source; ms per photo; landmark agreement between
             detectors (mean 5-point distance over the inter-ocular distance, same photo).
recognizers  TAR at FAR 1e-3 and 1e-4 over every genuine and impostor pair (overall and within each
             source), ms per face, each on the crops aligned with the detector given by --align
             (and the default recognizer on every detector's landmarks).
quality      for a seeded sample of photos, degraded copies (curate.degrade: blur, downscale,
             occlusion, extreme crop, dark, noise): how often each signal ranks the copy below its
             clean original (AUC: 1 perfect, 0.5 chance) - the raw feature norm of each recognizer,
             the crop's sharpness, the detector score - and how often the copy still has a face.

Not a test: figures depend on the machine. Results go to stdout (markdown) and --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from curate.config import DecodeConfig
from curate.io.sources import FolderSource
from curate.stages.decode import decode_one
from curate.stages.detect import prominence
from curate.stats import pair_scores, tar_at_far
from models import DETECTORS, RECOGNIZERS
from models.templates import template, warp

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def load(root: str) -> tuple[list[np.ndarray], list[str], list[str]]:
    src = FolderSource(root)
    index = src.plan()
    fetched = src.fetch(index, DecodeConfig().max_bytes)
    imgs, labels, sources = [], [], []
    for data, ident in zip(fetched["data"].to_pylist(), fetched["identity"].to_pylist()):
        if data is None or ident is None:
            continue
        pixels, _ = decode_one(data, DecodeConfig())
        if pixels is None:
            continue
        imgs.append(pixels)
        labels.append(ident)
        sources.append(ident.split("__")[0] if "__" in ident else "all")
    return imgs, labels, sources


def chosen(faces, img) -> int | None:
    if not len(faces):
        return None
    return int(np.argmax(prominence(faces.boxes, faces.scores, img.shape[1], img.shape[0])))


def run_detector(name: str, imgs: list[np.ndarray], batch: int = 16):
    det = DETECTORS.build(name, threads=1, **({"upsample": 1} if name.startswith("dlib") else {}))
    out = []
    t0 = time.perf_counter()
    for s in range(0, len(imgs), batch):
        out += det.detect_batch(imgs[s : s + batch])
    return det, out, (time.perf_counter() - t0) / len(imgs) * 1000


def embed(rec, imgs, faces, idx) -> tuple[np.ndarray, np.ndarray, float]:
    tmpl = template(rec.template, rec.size)
    crops = np.stack([warp(imgs[i], faces[i].landmarks[chosen(faces[i], imgs[i])], tmpl, rec.size) for i in idx])
    t0 = time.perf_counter()
    raw = np.concatenate([rec.embed(crops[s : s + 32]) for s in range(0, len(crops), 32)])
    ms = (time.perf_counter() - t0) / len(crops) * 1000
    norms = np.linalg.norm(raw, axis=1)
    return raw / norms[:, None], norms, ms


def verification(emb, labels, sources, idx) -> dict:
    lab = np.array([labels[i] for i in idx], object)
    src = np.array([sources[i] for i in idx], object)
    _, codes = np.unique(lab, return_inverse=True)
    out = {}
    for s in ["overall", *sorted(set(src))]:
        m = np.ones(len(idx), bool) if s == "overall" else src == s
        if len(set(codes[m])) < 2:
            continue
        g, i = pair_scores(emb[m], codes[m])
        out[s] = {"tar@1e-3": tar_at_far(g, i, 1e-3), "tar@1e-4": tar_at_far(g, i, 1e-4), "genuine": len(g), "impostor": len(i)}
    return out


def sharpness(crop: np.ndarray) -> float:
    import cv2

    return float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def quality_auc(det, recs, imgs, faces, idx, n: int, seed: int) -> dict:
    """AUC of each signal for 'degraded copy below its clean original', per degradation."""
    from curate.degrade import DEGRADATIONS

    rng = np.random.default_rng(seed)
    sample = sorted(rng.choice(idx, min(n, len(idx)), replace=False).tolist())
    arc = template("arcface", 112)

    def signals(img, f):
        k = chosen(f, img)
        crop = warp(img, f.landmarks[k], arc, 112)
        sig = {"sharpness": sharpness(crop), "det_score": float(f.scores[k])}
        for name, rec in recs.items():
            chip = crop if (rec.template, rec.size) == ("arcface", 112) else warp(img, f.landmarks[k], template(rec.template, rec.size), rec.size)
            sig[f"norm:{name}"] = float(np.linalg.norm(rec.embed(chip[None])[0]))
        return sig

    clean = {i: signals(imgs[i], faces[i]) for i in sample}
    out = {}
    for kind, fn in DEGRADATIONS.items():
        wins, found = defaultdict(list), 0
        for i in sample:
            k = chosen(faces[i], imgs[i])
            bad = fn(imgs[i], tuple(faces[i].boxes[k]), rng)
            f = det.detect(bad)
            if not len(f):
                continue
            found += 1
            s = signals(bad, f)
            for key, v in s.items():
                wins[key].append(1.0 if v < clean[i][key] else 0.5 if v == clean[i][key] else 0.0)
        out[kind] = {"face_found": round(found / len(sample), 3), **{k: round(float(np.mean(v)), 3) for k, v in wins.items()}}
    keys = sorted({k for v in out.values() for k in v if k != "face_found"})
    out["mean"] = {k: round(float(np.mean([out[d][k] for d in DEGRADATIONS if k in out[d]])), 3) for k in keys}
    return out


def landmark_agreement(a, b, imgs) -> dict:
    d = []
    for fa, fb, img in zip(a, b, imgs):
        ka, kb = chosen(fa, img), chosen(fb, img)
        if ka is None or kb is None:
            continue
        la, lb = fa.landmarks[ka], fb.landmarks[kb]
        iod = max(np.linalg.norm(la[0] - la[1]), 1.0)
        d.append(float(np.linalg.norm(la - lb, axis=1).mean() / iod))
    d = np.array(d)
    return {"photos": len(d), "median": round(float(np.median(d)), 4), "within_0.1": round(float((d < 0.1).mean()), 4),
            "within_0.25": round(float((d < 0.25).mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", default=str(SHARED))
    ap.add_argument("--detectors", nargs="+", default=["yunet", "scrfd", "dlib-hog"])
    ap.add_argument("--recognizers", nargs="+", default=["edgeface_s", "w600k_mbf", "sface", "dlib-resnet"])
    ap.add_argument("--align", default="yunet", help="Detector whose landmarks align the recognizers' crops.")
    ap.add_argument("--quality-sample", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench-out/models.json")
    args = ap.parse_args()
    imgs, labels, sources = load(args.faces)
    print(f"{len(imgs)} photos, {len(set(labels))} identities from {args.faces}\n")
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads_per_model": 1},
              "photos": len(imgs), "identities": len(set(labels)), "detectors": {}, "recognizers": {}}
    dets, found = {}, {}
    per_source = defaultdict(lambda: [0, 0])
    for s in sources:
        per_source[s][1] += 1
    print("| detector | found | " + " | ".join(f"{s} ({n})" for s, (_, n) in sorted(per_source.items())) + " | ms/photo |")
    print("|---" * (len(per_source) + 3) + "|")
    for name in args.detectors:
        det, faces, ms = run_detector(name, imgs)
        dets[name], found[name] = det, faces
        by = defaultdict(int)
        for f, s in zip(faces, sources):
            by[s] += len(f) > 0
        total = sum(len(f) > 0 for f in faces)
        result["detectors"][name] = {"id": det.id, "found": total, "per_source": dict(by), "ms_per_photo": round(ms, 2)}
        print(f"| {name} | {total} | " + " | ".join(str(by[s]) for s in sorted(per_source)) + f" | {ms:.1f} |")
    names = list(found)
    agree = {f"{a} vs {b}": landmark_agreement(found[a], found[b], imgs) for i, a in enumerate(names) for b in names[i + 1 :]}
    result["landmark_agreement"] = agree
    print("\nlandmark agreement (mean 5-point distance / inter-ocular distance):")
    for k, v in agree.items():
        print(f"  {k}: median {v['median']}, within 0.1: {v['within_0.1']:.1%}, within 0.25: {v['within_0.25']:.1%} ({v['photos']} photos)")
    base = found[args.align]
    idx = [i for i, f in enumerate(base) if len(f)]
    recs = {}
    print(f"\nrecognizers on {len(idx)} faces aligned with {args.align}'s landmarks:")
    print("| recognizer | dim | TAR@1e-3 | TAR@1e-4 | " + " | ".join(sorted(set(sources))) + " | ms/face |")
    print("|---" * (len(set(sources)) + 5) + "|")
    for name in args.recognizers:
        rec = RECOGNIZERS.build(name, threads=1)
        recs[name] = rec
        emb, norms, ms = embed(rec, imgs, base, idx)
        v = verification(emb, labels, sources, idx)
        result["recognizers"][name] = {"id": rec.id, "dim": rec.dim, "ms_per_face": round(ms, 2), "verification": v,
                                       "licence": rec.card.get("licence"), "commercial_use": rec.card.get("commercial_use")}
        print(f"| {name} | {rec.dim} | {v['overall']['tar@1e-3']:.3f} | {v['overall']['tar@1e-4']:.3f} | "
              + " | ".join(f"{v[s]['tar@1e-3']:.3f}" if s in v else "-" for s in sorted(set(sources))) + f" | {ms:.1f} |")
    first = args.recognizers[0]
    print(f"\n{first} TAR@1e-3 / 1e-4 with each detector's landmarks (faces all detectors found):")
    common = [i for i in idx if all(len(found[d][i]) for d in names)]
    result["alignment"] = {}
    for d in names:
        emb, _, _ = embed(recs[first], imgs, found[d], common)
        v = verification(emb, labels, sources, common)["overall"]
        result["alignment"][d] = v
        print(f"  {d}: {v['tar@1e-3']:.3f} / {v['tar@1e-4']:.3f} ({len(common)} faces)")
    print(f"\nquality: AUC of 'degraded copy below its original' ({args.quality_sample} photos, seed {args.seed}):")
    q = quality_auc(dets[args.align], recs, imgs, base, idx, args.quality_sample, args.seed)
    result["quality_auc"] = q
    keys = sorted(q["mean"])
    print("| degradation | face found | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for kind, row in q.items():
        print(f"| {kind} | {row.get('face_found', '')} | " + " | ".join(f"{row.get(k, float('nan')):.3f}" for k in keys) + " |")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=float)
    print(f"\n-> {args.out}")


if __name__ == "__main__":
    main()
