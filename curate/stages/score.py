"""score: per-face label-noise and quality signals, computed for all identities at once.

Label noise (../shared/spec/arcface-subcenter.md, embedding-space version): K sub-centers per
identity by spherical k-means on the unit embeddings, vectorised across identities (no Python loop
over 100K identities). Sub-centers within ``merge_angle`` of the dominant one are merged back:
k-means always splits, even a clean identity, while the paper's noisy sub-centers sit far away. The
dominant center is then the magnitude-weighted template (MagFace+: normalize(sum ||f|| * f_hat)) of
its members. Per face: sub-center, is_dominant, and the angle to the dominant center *leaving the
face out of it* (a face is a third of a 3-face identity's template, so with it in, small identities
look tighter than they are and a swap hides in them; left out, the angle is the one the model's
calibration measured); per identity: the dominant share.

Thresholds (``thresholds``) come from the model card's calibration (curate.calibration), measured
on a labelled reference set; the run's own impostor angles are only a cross-check, because a
crawl's statistics are set by its noise. Quality lives in curate.calibration (reference
percentiles of the norm and, where the norm is weak, other signals); pose is estimated here from
the five landmarks.

Arrays: emb (N, D) float32 unit rows; codes (N,) int identity codes in [0, I).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from curate.stats import unit

CHUNK = 1 << 16


def segment_sum(keys: np.ndarray, x: np.ndarray, n_keys: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(n_keys, D): sum of rows of x (times weights) grouped by key, as one sparse matmul."""
    w = np.ones(len(keys), np.float32) if weights is None else weights.astype(np.float32)
    m = sp.csr_matrix((w, (keys, np.arange(len(keys)))), shape=(n_keys, len(keys)))
    return np.asarray(m @ x, dtype=np.float32)


def rowdot(x: np.ndarray, centers: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(N,) dot(x[i], centers[idx[i]]), chunked so the gathered centers never exceed CHUNK rows."""
    out = np.empty(len(x), np.float32)
    for s in range(0, len(x), CHUNK):
        out[s : s + CHUNK] = np.einsum("nd,nd->n", x[s : s + CHUNK], centers[idx[s : s + CHUNK]])
    return out


def segment_argmin(values: np.ndarray, codes: np.ndarray, n_codes: int) -> np.ndarray:
    """(n_codes,) row index of the smallest value within each code (-1 for empty codes)."""
    order = np.lexsort((values, codes))
    first = np.ones(len(order), bool)
    first[1:] = codes[order][1:] != codes[order][:-1]
    out = np.full(n_codes, -1, np.int64)
    out[codes[order][first]] = order[first]
    return out


@dataclass
class Subcenters:
    subcenter: np.ndarray  # (N,) int8, after merging near sub-centers into the dominant one
    is_dominant: np.ndarray  # (N,) bool
    angle: np.ndarray  # (N,) float32 degrees to the identity's dominant center without the face (NaN: none left)
    centers: np.ndarray  # (I, D) float32 unit dominant centers (magnitude-weighted templates)
    share: np.ndarray  # (I,) float32 fraction of the identity in the dominant sub-center
    size: np.ndarray  # (I,) int64 faces per identity


def kmeans_subcenters(emb: np.ndarray, codes: np.ndarray, n_ids: int, k: int = 3,
                      iters: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means with k centers per identity, all identities together.
    -> (assign (N,) in [0, k), centers (I, k, D) unit)."""
    n, d = emb.shape
    # Deterministic max-min init: the identity's mean direction, then the faces farthest from the centers so far.
    c = np.zeros((n_ids, k, d), np.float32)
    c[:, 0] = unit(segment_sum(codes, emb, n_ids))
    best = rowdot(emb, c[:, 0], codes)
    for j in range(1, k):
        far = segment_argmin(best, codes, n_ids)
        c[far >= 0, j] = emb[far[far >= 0]]
        best = np.maximum(best, rowdot(emb, c[:, j], codes))
    flat = c.reshape(n_ids * k, d)
    assign = np.zeros(n, np.int64)
    for _ in range(iters):
        sims = np.stack([rowdot(emb, flat[j::k], codes) for j in range(k)], axis=1)
        assign = sims.argmax(1)
        sums = segment_sum(codes * k + assign, emb, n_ids * k)
        ok = np.linalg.norm(sums, axis=1) > 0
        flat[ok] = unit(sums[ok])  # empty sub-centers keep their place
    return assign, flat.reshape(n_ids, k, d)


def loo_angle(emb: np.ndarray, raw: np.ndarray, codes: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(N,) degrees between each unit face and its identity's unnormalised template ``raw`` minus
    the face's own contribution ``w`` (0 for faces outside the template); NaN when nothing is left.
    |x| = 1, so x.(T - w x) = x.T - w and |T - w x|^2 = |T|^2 - 2 w x.T + w^2."""
    xt = rowdot(emb, raw, codes).astype(np.float64)
    tt = np.einsum("id,id->i", raw, raw).astype(np.float64)[codes]
    w = w.astype(np.float64)
    rest2 = tt - 2 * w * xt + w * w
    # a face alone in its template leaves 0, up to float32 error: anything under 1% of |T| is nothing
    ok = rest2 > 1e-4 * np.maximum(tt, 1e-12)
    cos = (xt - w) / np.sqrt(np.where(ok, rest2, 1.0))
    out = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    out[~ok] = np.nan
    return out.astype(np.float32)


def subcenters(emb: np.ndarray, codes: np.ndarray, n_ids: int, norms: np.ndarray | None = None, k: int = 3,
               iters: int = 10, merge_angle: float = 45.0, assign: np.ndarray | None = None,
               centers: np.ndarray | None = None) -> Subcenters:
    """Dominant sub-center per identity from an assignment of faces to k sub-centers (k-means by
    default, or a sub-center ArcFace head's): dominant = most faces; sub-centers within
    ``merge_angle`` of it are the same person; the dominant center is the magnitude-weighted
    template of its members."""
    n, d = emb.shape
    if assign is None:
        assign, centers = kmeans_subcenters(emb, codes, n_ids, k, iters)
    size = np.bincount(codes, minlength=n_ids)
    counts = np.bincount(codes * k + assign, minlength=n_ids * k).reshape(n_ids, k)
    dominant = counts.argmax(1)
    dom_center = centers[np.arange(n_ids), dominant]
    cos_to_dom = np.einsum("ikd,id->ik", centers, dom_center)
    merged = np.degrees(np.arccos(np.clip(cos_to_dom, -1, 1))) < merge_angle
    is_dom = merged[codes, assign]
    sub = np.where(is_dom, dominant[codes], assign).astype(np.int8)
    w = (norms if norms is not None else np.ones(n, np.float32)) * is_dom
    raw = segment_sum(codes, emb, n_ids, weights=w)  # unnormalised templates
    empty = np.linalg.norm(raw, axis=1) == 0
    raw[empty] = dom_center[empty]
    angle = loo_angle(emb, raw, codes, w)
    tmpl = unit(raw)
    share = np.bincount(codes, weights=is_dom, minlength=n_ids) / np.maximum(size, 1)
    return Subcenters(sub, is_dom, angle, tmpl, share.astype(np.float32), size)


def impostor_angles(emb: np.ndarray, codes: np.ndarray, index, n: int = 100_000, seed: int = 0) -> np.ndarray:
    """Angles (deg) between faces (``emb``, any float dtype: normalised here) and *other*
    identities' centers (``index``: nearest.center_index, with_rows), sampled: the impostor
    distribution, CHUNK faces at a time. Empty with fewer than two identities."""
    from curate.stages.dedup import CHUNK, unit_rows
    from curate.stages.nearest import center_rows

    n_ids = 0 if index is None else index.ntotal
    if n_ids < 2 or not len(emb):
        return np.zeros(0, np.float32)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(emb), min(n, 4 * len(emb)))
    other = (codes[rows] + rng.integers(1, n_ids, len(rows))) % n_ids
    cos = np.concatenate([np.einsum("nd,nd->n", unit_rows(emb[rows[a : a + CHUNK]]), center_rows(index, other[a : a + CHUNK]))
                          for a in range(0, len(rows), CHUNK)])
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


@dataclass
class Thresholds:
    far_angle: float  # degrees
    dup_cos: float
    merge_cos: float
    run_impostor_p1: float  # degrees: the run's own impostor 1st percentile (a cross-check)
    source: dict  # threshold -> "config" | "card" | "run"
    warnings: list


def thresholds(p1: float | None, cfg, cal: dict | None, cap: float = 75.0) -> Thresholds:
    """Thresholds in the model's own geometry: the user's, else the model card's calibration,
    else (an uncalibrated model) estimates from this run - p1, the 1st percentile of the run's
    impostor angles: far = min(p1, 75), merge = p1/2, duplicate = p1/6 - with a warning, because
    a crawl's statistics are set by its noise. The run estimate (``p1``, None for fewer than two
    identities) is always computed, and a large disagreement with the card is reported."""
    p1 = float("nan") if p1 is None else float(p1)
    card = (cal or {}).get("thresholds", {})
    run = {"far_angle": min(cap, p1), "dup_cos": float(np.cos(np.radians(p1 / 6))),
           "merge_cos": float(np.cos(np.radians(p1 / 2)))} if np.isfinite(p1) else {}
    user = {"far_angle": cfg.far_angle, "dup_cos": cfg.dup_threshold, "merge_cos": cfg.merge_threshold}
    out, source, warnings = {}, {}, []
    for k in ("far_angle", "dup_cos", "merge_cos"):
        if user[k] is not None:
            out[k], source[k] = float(user[k]), "config"
        elif k in card:
            out[k], source[k] = float(card[k]), "card"
        elif k in run:
            out[k], source[k] = float(run[k]), "run"
        else:  # one identity and no calibration: nothing to measure against
            out[k], source[k] = {"far_angle": cap, "dup_cos": 0.98, "merge_cos": 1.0}[k], "fallback"
    if "run" in source.values() or "fallback" in source.values():
        warnings.append("the recognizer has no calibration in its model card, so thresholds were estimated from "
                        "this crawl, whose statistics are set by its own noise; run `curate calibrate` on a labelled "
                        "reference set, or set --far-angle/--dup-threshold/--merge-threshold")
    if cal and np.isfinite(p1):
        from curate.stats import GRID, at

        ref = at(cal["angle_to_center"]["impostor"], 0.01, cal.get("grid", GRID))
        if abs(ref - p1) > 10:
            warnings.append(f"this crawl's impostor angles (1st percentile {p1:.1f} deg) disagree with the model's "
                            f"calibration ({ref:.1f} deg): faces unlike the reference set, a different detector or "
                            "alignment, or a mislabelled crawl; check the far-angle sweep in the report")
    return Thresholds(out["far_angle"], out["dup_cos"], out["merge_cos"], p1, source, warnings)


# -- pose -----------------------------------------------------------------------------------
def pose(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 10) five points -> yaw, pitch, roll in degrees, estimated (roughly +-15 deg) from the
    nose's offset between the eyes and between the eye and mouth lines, and the eye-line tilt."""
    p = landmarks.reshape(-1, 5, 2).astype(np.float64)
    le, re, nose, lm, rm = (p[:, i] for i in range(5))
    roll = np.degrees(np.arctan2(re[:, 1] - le[:, 1], re[:, 0] - le[:, 0]))
    c, s = np.cos(np.radians(-roll)), np.sin(np.radians(-roll))

    def rot(v):  # undo roll around the eye midpoint
        v = v - (le + re) / 2
        return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], 1)

    eye_d = np.linalg.norm(re - le, axis=1)
    n, mouth = rot(nose), rot((lm + rm) / 2)
    yaw = np.degrees(np.arcsin(np.clip(2 * (n[:, 0] - mouth[:, 0] / 2) / np.maximum(eye_d, 1e-6), -1, 1)))
    ratio = n[:, 1] / np.maximum(mouth[:, 1], 1e-6)  # 0.495 on the ArcFace template (frontal)
    pitch = np.degrees(np.arcsin(np.clip((ratio - 0.495) / 0.5, -1, 1)))
    return yaw.astype(np.float32), pitch.astype(np.float32), roll.astype(np.float32)
