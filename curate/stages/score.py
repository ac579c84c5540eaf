"""score: per-face label-noise and quality signals, computed for all identities at once.

Label noise (../shared/spec/arcface-subcenter.md, embedding-space version): K sub-centers per
identity by spherical k-means on the unit embeddings, vectorised across identities (no Python loop
over 100K identities). Sub-centers within ``merge_angle`` of the dominant one are merged back:
k-means always splits, even a clean identity, while the paper's noisy sub-centers sit far away. The
dominant center is then the magnitude-weighted template (MagFace+: normalize(sum ||f|| * f_hat)) of
its members. Per face: sub-center, is_dominant, angle to the dominant center; per identity: the
dominant share.

Quality (../shared/spec/magface-adaface.md section 6): the raw feature norm as a percentile of a
per-model reference distribution (stored quantiles, so scores are reproducible and never compared
across models raw), and pose estimated from the five landmarks.

Arrays: emb (N, D) float32 unit rows; codes (N,) int identity codes in [0, I).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

CHUNK = 1 << 16


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


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
    angle: np.ndarray  # (N,) float32 degrees to the identity's dominant center
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
    c[:, 0] = _unit(segment_sum(codes, emb, n_ids))
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
        flat[ok] = _unit(sums[ok])  # empty sub-centers keep their place
    return assign, flat.reshape(n_ids, k, d)


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
    tmpl = segment_sum(codes, emb, n_ids, weights=w)
    empty = np.linalg.norm(tmpl, axis=1) == 0
    tmpl[empty] = dom_center[empty]
    tmpl = _unit(tmpl)
    angle = np.degrees(np.arccos(np.clip(rowdot(emb, tmpl, codes), -1, 1))).astype(np.float32)
    share = np.bincount(codes, weights=is_dom, minlength=n_ids) / np.maximum(size, 1)
    return Subcenters(sub, is_dom, angle, tmpl, share.astype(np.float32), size)


def impostor_angles(emb: np.ndarray, codes: np.ndarray, centers: np.ndarray, n: int = 100_000, seed: int = 0) -> np.ndarray:
    """Angles (deg) between faces and *other* identities' centers, sampled: the impostor distribution."""
    if len(centers) < 2:
        return np.array([90.0], np.float32)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(emb), min(n, 4 * len(emb)))
    other = (codes[rows] + rng.integers(1, len(centers), len(rows))) % len(centers)
    cos = np.einsum("nd,nd->n", emb[rows], centers[other])
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


@dataclass
class Thresholds:
    far_angle: float  # degrees
    dup_cos: float
    merge_cos: float
    impostor_p1: float  # degrees


def thresholds(emb, codes, centers, far_angle=None, dup_cos=None, merge_cos=None, cap: float = 75.0) -> Thresholds:
    """Thresholds in the model's own geometry. The paper's 75 degrees assumes ArcFace, where other
    people sit near 90 degrees; models differ (dlib's 128-d: far closer), so unset thresholds follow
    p1, the 1st percentile of impostor angles: far = min(p1, 75), merge = p1/2, duplicate = p1/6."""
    p1 = float(np.percentile(impostor_angles(emb, codes, centers), 1))
    return Thresholds(
        far_angle if far_angle is not None else min(cap, p1),
        dup_cos if dup_cos is not None else float(np.cos(np.radians(p1 / 6))),
        merge_cos if merge_cos is not None else float(np.cos(np.radians(p1 / 2))),
        p1,
    )


# -- quality --------------------------------------------------------------------------------
QUANTILES = np.linspace(0.0, 1.0, 1001)


def norm_quantiles(norms: np.ndarray) -> np.ndarray:
    """(1001,) reference quantiles of one model's raw feature norms: its calibration."""
    return np.quantile(norms.astype(np.float64), QUANTILES).astype(np.float32)


def quality(norms: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """(N,) 0-100: percentile of each raw norm in the model's reference distribution (monotone)."""
    q = np.asarray(quantiles, np.float64)
    # ties in the quantiles (e.g. clamped norms) would make interp non-monotone: keep the last
    keep = np.r_[q[1:] > q[:-1], True]
    return (100.0 * np.interp(norms, q[keep], QUANTILES[keep])).astype(np.float32)


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
