"""Per-model calibration: what a recognizer's angles, cosines and norms mean, measured once on a
labelled reference set and versioned with the model's card, so that thresholds and quality do not
depend on the crawl being curated (a crawl's own statistics are set by its noise).

``reference_rows`` runs the real spine (reader, decode, detect, align, embed) over an identity-folder
tree plus near-duplicate copies of some of its photos; ``calibrate`` turns the embeddings into
distributions and thresholds:

- ``norm``: quantiles of the raw feature norm (quality = percentile in these, the same in any run);
- ``angle_to_center``: angle of a face to its identity's template without it (genuine) and to other
  identities' templates (impostor): what ``far_from_dominant`` thresholds;
- ``pair_cos``: one face against another, same person or not (verification, TAR at FAR);
- ``duplicate_cos``: a photo against its re-encoded, resized, cropped or mirrored copy;
- ``center_cos``: templates of two halves of one identity vs templates of two identities: what
  ``identity_merge_candidate`` thresholds;
- ``thresholds``: the defaults derived from those (see ``derive_thresholds``).

Distributions are stored as quantiles on ``GRID`` (fine at both tails).
"""

from __future__ import annotations

import datetime
import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.schema import decode_embeddings

VERSION = 1
GRID = (0.0, 0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
        0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999, 1.0)
NORM_GRID = tuple(np.linspace(0.0, 1.0, 101).round(4))


def _q(x: np.ndarray, grid=GRID) -> list[float]:
    """Quantiles as float32 values: a float32 score equal to a quantile compares equal to it."""
    return [float(np.float32(v)) for v in np.quantile(np.asarray(x, np.float64), grid)] if len(x) else []


def at(dist: list[float], p: float, grid=GRID) -> float:
    """The value at probability p of a stored distribution (linear between grid points)."""
    return float(np.interp(p, grid, dist))


def cdf(dist: list[float], x: float | np.ndarray, grid=GRID) -> float | np.ndarray:
    """P(X <= x) of a stored distribution (linear between grid points; flat runs of equal values
    keep their last probability)."""
    d = np.asarray(dist, np.float64)
    g = np.asarray(grid, np.float64)
    keep = np.r_[d[1:] > d[:-1], True]
    return np.interp(x, d[keep], g[keep], left=0.0, right=1.0)


def _angles(cos: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def loo_angles(emb: np.ndarray, codes: np.ndarray, weights: np.ndarray, n_ids: int) -> np.ndarray:
    """(N,) degrees from each face to its identity's weighted template with the face itself left
    out (NaN when nothing is left). In a 3-face identity a face is a third of its own template:
    with it in, small identities look tighter than large ones; left out, they do not."""
    tmpl = np.zeros((n_ids, emb.shape[1]), np.float64)
    np.add.at(tmpl, codes, emb * weights[:, None])
    rest = tmpl[codes] - emb * weights[:, None]
    norm = np.linalg.norm(rest, axis=1)
    cos = np.einsum("nd,nd->n", emb, rest) / np.where(norm > 1e-9, norm, 1.0)
    out = _angles(cos)
    out[norm <= 1e-2 * np.linalg.norm(tmpl[codes], axis=1)] = np.nan  # nothing left but float error
    return out.astype(np.float32)


def derive_thresholds(c: dict) -> dict:
    """Default thresholds from the distributions, in the model's own geometry.

    far_angle: the angle where the impostor share below it is 1% (a label swap is caught 99% of
    the time), unless that cuts into more than 1% of genuine faces; then the point where the two
    error rates are equal. Floor and ceiling: the genuine 99th and 99.9th percentiles, so a model
    never rejects more than ~1% of clean faces by default.
    dup_cos: the genuine-pair 99.99th percentile (pairs of byte-identical files left out).
    merge_cos: halfway (in angle) between the different-identity center 99.95th percentile and
    the same-person center 1st percentile.
    """
    g = c.get("grid", GRID)  # every distribution is stored on the grid saved with it
    gen, imp = c["angle_to_center"]["genuine"], c["angle_to_center"]["impostor"]
    imp_p1, gen_p99, gen_p999 = at(imp, 0.01, g), at(gen, 0.99, g), at(gen, 0.999, g)
    if imp_p1 >= gen_p99:
        far = imp_p1
    else:  # overlap: equal error rate, found on a fine grid of angles
        xs = np.linspace(0, 180, 3601)
        far = float(xs[np.argmin(np.abs((1 - cdf(gen, xs, g)) - cdf(imp, xs, g)))])
    far = float(np.clip(far, gen_p99, max(gen_p999, gen_p99)))

    def mid_angle(lo_cos: float, hi_cos: float) -> float:
        a, b = _angles(np.array([lo_cos, hi_cos]))
        return float(np.cos(np.radians((a + b) / 2)))
    # Two different photos of one person can be as close as a re-saved copy (lab sets shoot a
    # person seconds apart), so the duplicate threshold is set by the genuine pairs' tail: a
    # different photo is called a duplicate in at most 1 of 10,000 same-person pairs, so that in
    # an identity of 100 photos (4,950 pairs) about 1% of its faces are flagged by mistake. Exact
    # copies (same bytes) are duplicates whatever the threshold.
    dup_cos = at(c["pair_cos"]["genuine"], 0.9999, g)
    centers = c["center_cos"]
    merge_cos = mid_angle(at(centers["different"], 0.9995, g), at(centers["same_person"], 0.01, g))
    return {"far_angle": round(far, 2), "far_angle_floor": round(gen_p99, 2), "far_angle_ceiling": round(max(gen_p999, gen_p99), 2),
            "dup_cos": round(dup_cos, 4), "merge_cos": round(merge_cos, 4)}


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """Share of genuine scores above the threshold that lets ``far`` of impostors through."""
    if not len(genuine) or not len(impostor):
        return float("nan")
    thr = np.quantile(impostor, 1.0 - far)
    return float(np.mean(genuine > thr))


def pair_scores(emb: np.ndarray, codes: np.ndarray, max_impostor: int = 4_000_000, seed: int = 0,
                same_bytes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(genuine cos of every same-identity pair, impostor cos of every (or a seeded sample of)
    cross-identity pair). ``same_bytes`` (N,) int: a file-content code; pairs of byte-identical
    files are left out of the genuine pairs (they are copies, not two photos)."""
    n = len(emb)
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(codes[order])) + 1, n]
    gen = []
    for a, b in zip(starts[:-1], starts[1:]):
        if b - a > 1:
            m = emb[order[a:b]] @ emb[order[a:b]].T
            iu = np.triu_indices(b - a, 1)
            if same_bytes is not None:
                sb = same_bytes[order[a:b]]
                iu = tuple(x[sb[iu[0]] != sb[iu[1]]] for x in iu)
            gen.append(m[iu])
    gen = np.concatenate(gen) if gen else np.zeros(0, np.float32)
    if n * (n - 1) // 2 <= max_impostor:
        i, j = np.triu_indices(n, 1)
    else:
        i, j = rng.integers(0, n, max_impostor), rng.integers(0, n, max_impostor)
    cross = codes[i] != codes[j]
    i, j = i[cross], j[cross]
    imp = np.concatenate([np.einsum("nd,nd->n", emb[i[s : s + 1 << 20]], emb[j[s : s + 1 << 20]])
                          for s in range(0, len(i), 1 << 20)]) if len(i) else np.zeros(0, np.float32)
    return gen, imp


def calibrate(emb: np.ndarray, norms: np.ndarray, labels: list[str] | np.ndarray,
              dup_pairs: np.ndarray | None = None, seed: int = 0, cues: dict[str, np.ndarray] | None = None,
              content: list | None = None) -> dict:
    """emb (N, D) float unit rows, norms (N,) raw feature norms, labels (N,) identities, dup_pairs
    (M, 2) row indices of (photo, near-duplicate copy), cues: other per-face quality signals
    (sharpness, det_score: (N,)) whose reference quantiles are kept too, content: (N,) a hash of
    each file's bytes (byte-identical files are not two photos) -> the calibration dict."""
    rng = np.random.default_rng(seed)
    emb = _unit(np.asarray(emb, np.float64))
    norms = np.asarray(norms, np.float64)
    names, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    n_ids = len(names)
    is_dup_copy = np.zeros(len(emb), bool)
    if dup_pairs is not None and len(dup_pairs):
        is_dup_copy[dup_pairs[:, 1]] = True
    base = ~is_dup_copy  # copies stay out of every distribution but their own
    e, c, w = emb[base], codes[base], norms[base]
    _, c = np.unique(c, return_inverse=True)
    n_ids = int(c.max()) + 1 if len(c) else 0
    genuine = loo_angles(e, c, w, n_ids)
    tmpl = np.zeros((n_ids, e.shape[1]))
    np.add.at(tmpl, c, e * w[:, None])
    tmpl = _unit(tmpl)
    rows = rng.integers(0, len(e), min(400_000, 50 * len(e)))
    other = (c[rows] + rng.integers(1, max(n_ids, 2), len(rows))) % max(n_ids, 1)
    impostor = _angles(np.einsum("nd,nd->n", e[rows], tmpl[other])) if n_ids > 1 else np.zeros(0)
    same = None
    if content is not None:
        same = np.unique(np.asarray(content, dtype=object)[base].astype(str), return_inverse=True)[1]
    gen_pairs, imp_pairs = pair_scores(e, c, seed=seed, same_bytes=same)
    # same person, two templates: random halves of identities with 4+ faces
    halves = []
    for k in range(n_ids):
        members = np.flatnonzero(c == k)
        if len(members) >= 4:
            for _ in range(4):
                p = rng.permutation(members)
                h = len(p) // 2
                a, b = _unit((e[p[:h]] * w[p[:h], None]).sum(0)), _unit((e[p[h:]] * w[p[h:], None]).sum(0))
                halves.append(float(a @ b))
    diff = (tmpl @ tmpl.T)[np.triu_indices(n_ids, 1)] if n_ids > 1 else np.zeros(0)
    dup = np.einsum("nd,nd->n", emb[dup_pairs[:, 0]], emb[dup_pairs[:, 1]]) if dup_pairs is not None and len(dup_pairs) else np.zeros(0)
    out = {
        "version": VERSION,
        "grid": list(GRID),
        "reference": {"faces": int(base.sum()), "identities": n_ids, "duplicate_pairs": int(len(dup)),
                      "genuine_pairs": int(len(gen_pairs)), "impostor_pairs": int(len(imp_pairs))},
        "norm": {"grid": list(NORM_GRID), "quantiles": _q(w, NORM_GRID)},
        "cues": {k: {"grid": list(NORM_GRID), "quantiles": _q(np.asarray(v, np.float64)[base], NORM_GRID)}
                 for k, v in (cues or {}).items()},
        "angle_to_center": {"genuine": _q(genuine[np.isfinite(genuine)]), "impostor": _q(impostor)},
        "pair_cos": {"genuine": _q(gen_pairs), "impostor": _q(imp_pairs)},
        "duplicate_cos": _q(dup),
        "center_cos": {"same_person": _q(np.array(halves)), "different": _q(diff)},
        "verification": {f"tar_at_far_{f:g}": round(tar_at_far(gen_pairs, imp_pairs, f), 4) for f in (1e-3, 1e-4)},
    }
    out["thresholds"] = derive_thresholds(out)
    return out


# -- the reference set, through the real spine ----------------------------------------------------


def near_duplicate(data: bytes, rng: np.random.Generator) -> bytes:
    """A re-saved copy of a photo as crawls hold them: re-encoded (JPEG q30-70), resized (0.5-0.9),
    cropped by up to 6% a side and, half the time, mirrored."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h = img.size
    m = rng.uniform(0, 0.06, 4)
    img = img.crop((int(w * m[0]), int(h * m[1]), int(w * (1 - m[2])), int(h * (1 - m[3]))))
    s = rng.uniform(0.5, 0.9)
    img = img.resize((max(int(img.width * s), 16), max(int(img.height * s), 16)), Image.BICUBIC)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(30, 71)))
    return buf.getvalue()


@dataclass
class Reference:
    """The reference set through the spine: ``rows`` (kept photos, then their near-duplicate
    copies), ``dup_pairs`` (M, 2) row indices (photo, copy), and ``degraded``: the spine's rows for
    degraded copies of a sample of the photos (every copy, face found or not), with ``original``
    (row index of the photo) and ``kind`` (curate.degrade)."""

    rows: pa.Table
    dup_pairs: np.ndarray
    degraded: pa.Table | None = None


def _fetched(rows: dict[str, list]) -> pa.Table:
    from curate.io.sources import FETCHED

    n = len(rows["data"])
    return pa.table({**rows, "reason": [None] * n, "reason_detail": [None] * n}, schema=FETCHED)


def reference_rows(root: str, models, cfg, batch_size: int = 32, duplicates: int = 300, degraded: int = 200,
                   seed: int = 0, on_batch=None) -> Reference:
    """Run the spine over the identity folders under ``root``, plus near-duplicate copies of up to
    ``duplicates`` of its photos and, for up to ``degraded`` photos, one copy per degradation."""
    from curate.config import Resources
    from curate.degrade import DEGRADATIONS
    from curate.io.sources import FolderSource
    from curate.pipeline import curate_batch
    from curate.stages.decode import decode_one
    from PIL import Image

    src = FolderSource(root)
    index = src.plan()
    res = Resources(batch_size=batch_size)
    parts, data = [], {}

    def run(fetched: pa.Table) -> pa.Table:
        out = pa.concat_tables([curate_batch(fetched.slice(s, batch_size), models, cfg, res)[0]
                                for s in range(0, len(fetched), batch_size)])
        if on_batch:
            on_batch(len(fetched))
        return out

    for s in range(0, len(index), batch_size):
        fetched = src.fetch(index.slice(s, batch_size), cfg.decode.max_bytes)
        data.update(zip(fetched["source"].to_pylist(), fetched["data"].to_pylist()))
        parts.append(run(fetched))
    rows = pa.concat_tables(parts)
    rows = rows.filter(pc.and_(rows["keep"], pc.is_valid(rows["identity"])))
    rng = np.random.default_rng(seed)
    srcs, ids = rows["source"].to_pylist(), rows["identity"].to_pylist()
    pairs = np.zeros((0, 2), np.int64)
    if duplicates and len(rows):
        pick = sorted(rng.choice(len(rows), min(duplicates, len(rows)), replace=False).tolist())
        copies = {"item": [len(index) + k for k in range(len(pick))], "source": [f"duplicate-of:{srcs[i]}" for i in pick],
                  "identity": [ids[i] for i in pick], "data": [near_duplicate(data[srcs[i]], rng) for i in pick]}
        dup_rows = run(_fetched(copies))
        ok = np.asarray(dup_rows["keep"].to_numpy(zero_copy_only=False))
        pairs = np.array([(i, len(rows) + j) for j, i in enumerate(np.array(pick)[ok])], np.int64).reshape(-1, 2)
        rows = pa.concat_tables([rows, dup_rows.filter(dup_rows["keep"])])
    bad = None
    if degraded and len(rows):
        pick = sorted(rng.choice(len(rows) - len(pairs), min(degraded, len(rows) - len(pairs)), replace=False).tolist())
        boxes = rows["bbox"].to_pylist()
        copies = {"item": [], "source": [], "identity": [], "data": []}
        origin, kinds = [], []
        for i in pick:
            pixels, _ = decode_one(data[srcs[i]], cfg.decode)
            for kind, fn in DEGRADATIONS.items():
                buf = io.BytesIO()
                Image.fromarray(fn(pixels, tuple(boxes[i]), rng)).save(buf, "JPEG", quality=95)
                copies["item"].append(len(index) + len(copies["item"]))
                copies["source"].append(f"{kind}-of:{srcs[i]}")
                copies["identity"].append(ids[i])
                copies["data"].append(buf.getvalue())
                origin.append(i)
                kinds.append(kind)
        bad = run(_fetched(copies)).append_column("original", pa.array(origin, pa.int64())).append_column(
            "kind", pa.array(kinds, pa.string()))
    return Reference(rows, pairs, bad)


QUALITY_SIGNALS = (("norm",), ("norm", "det_score"), ("norm", "sharpness"), ("norm", "det_score", "sharpness"))
NORM_IS_ENOUGH = 0.95  # degraded-below-original AUC at which the norm needs no help


def signal_percentiles(values: dict[str, np.ndarray], cal: dict) -> dict[str, np.ndarray]:
    """Each signal (``norm``, ``det_score``, ``sharpness``) as a 0-100 percentile of its reference
    distribution in the calibration (NaN where the value or the reference is missing)."""
    out = {}
    for name, v in values.items():
        ref = cal["norm"] if name == "norm" else cal.get("cues", {}).get(name)
        v = np.asarray(v, np.float64)
        if not ref or not ref.get("quantiles"):
            out[name] = np.full(len(v), np.nan)
            continue
        pct = 100.0 * cdf(ref["quantiles"], np.nan_to_num(v, nan=-np.inf), ref.get("grid", NORM_GRID))
        out[name] = np.where(np.isfinite(v), pct, np.nan)
    return out


def combined_quality(values: dict[str, np.ndarray], cal: dict, signals=None) -> np.ndarray:
    """(N,) 0-100: the geometric mean of the reference percentiles of the calibration's quality
    signals (the norm alone for a model whose norm carries quality; the norm with the detector
    score or sharpness for one whose norm is weak). Geometric, because a face is usable only when
    every signal says so: one very low signal pulls the face down (on the benchmark's tuning seeds
    it discards bad faces sooner than the arithmetic mean). Signals with no value are left out."""
    signals = list(signals or cal.get("quality", {}).get("signals", ["norm"]))
    pct = signal_percentiles({k: values[k] for k in signals if k in values}, cal)
    stack = np.stack([pct[k] for k in signals if k in pct]) if pct else np.zeros((0, 0))
    if not len(stack):
        return np.full(0, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.log(np.maximum(stack, 0.01))  # a percentile of 0 counts as 0.01, not minus infinity
        return np.exp(np.nanmean(np.where(np.isnan(stack), np.nan, logs), axis=0))


def _auc(orig: np.ndarray, bad: np.ndarray) -> float:
    """Share of (photo, degraded copy) pairs where the copy scores lower (ties count half)."""
    ok = np.isfinite(orig) & np.isfinite(bad)
    if not ok.any():
        return float("nan")
    return float(np.mean((bad[ok] < orig[ok]) + 0.5 * (bad[ok] == orig[ok])))


def quality_check(ref: Reference, cal: dict) -> dict:
    """AUC of each quality signal, and of the combinations in QUALITY_SIGNALS, for 'the degraded
    copy scores below its original', per degradation; the share of copies still found; and the
    signals chosen: the norm alone if it reaches NORM_IS_ENOUGH, else the best combination."""
    d = ref.degraded
    if d is None or not len(d):
        return {"signals": ["norm"], "auc": {}, "face_found": {}}
    kept = d.filter(d["keep"])
    orig = kept["original"].to_numpy()

    def values(t, rows=None):
        v = {"norm": t["feat_norm"].to_numpy(zero_copy_only=False), "det_score": t["det_score"].to_numpy(zero_copy_only=False),
             "sharpness": t["sharpness"].to_numpy(zero_copy_only=False)}
        return {k: np.asarray(x, np.float64)[rows] if rows is not None else np.asarray(x, np.float64) for k, x in v.items()}

    o, b = values(ref.rows, orig), values(kept)
    kinds = np.array(kept["kind"].to_pylist(), object)
    auc: dict[str, dict] = {}
    for combo in QUALITY_SIGNALS:
        name = "+".join(combo)
        qo, qb = combined_quality(o, cal, combo), combined_quality(b, cal, combo)
        auc[name] = {k: round(_auc(qo[kinds == k], qb[kinds == k]), 3) for k in sorted(set(kinds))}
        auc[name]["mean"] = round(float(np.nanmean(list(auc[name].values()))), 3) if len(kinds) else float("nan")
    for name in ("det_score", "sharpness"):
        auc[name] = {k: round(_auc(o[name][kinds == k], b[name][kinds == k]), 3) for k in sorted(set(kinds))}
        auc[name]["mean"] = round(float(np.nanmean(list(auc[name].values()))), 3) if len(kinds) else float("nan")
    all_kinds = np.array(d["kind"].to_pylist(), object)
    found = {k: round(float(np.mean(np.asarray(d["keep"].to_numpy(zero_copy_only=False))[all_kinds == k])), 3)
             for k in sorted(set(all_kinds))}
    best = ["norm"] if auc["norm"]["mean"] >= NORM_IS_ENOUGH else \
        list(max(QUALITY_SIGNALS, key=lambda c: auc["+".join(c)]["mean"]))
    return {"signals": best, "auc": auc, "face_found": found, "copies": len(d)}


def calibrate_reference(ref: Reference, seed: int = 0) -> dict:
    """The calibration of a reference set through the spine, stamped with the models that made
    it (det_score quantiles mean something only for the same detector), quality signals chosen
    by measurement."""
    rows = ref.rows
    emb = decode_embeddings(rows["embedding"]).astype(np.float32)
    norms = rows["feat_norm"].to_numpy(zero_copy_only=False)
    cues = {k: rows[k].to_numpy(zero_copy_only=False) for k in ("sharpness", "det_score")}
    cal = calibrate(emb, norms, rows["identity"].to_pylist(), ref.dup_pairs, seed, cues, rows["sha1"].to_pylist())
    det = rows["detector_id"][0].as_py() if len(rows) else None
    cal["cues"].get("det_score", {})["detector"] = det
    cal["reference"].update({"detector": det, "recognizer": rows["model_id"][0].as_py() if len(rows) else None,
                             "date": datetime.date.today().isoformat()})
    cal["quality"] = quality_check(ref, cal)
    return cal
