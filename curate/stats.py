"""Pure statistics of a recognizer's geometry on a labelled set, and of quality signals: quantiles
on a fixed grid, leave-one-out angles, pair scores, TAR at FAR, the thresholds derived from them,
reference percentiles, the combined quality. numpy only: a leaf every layer may use (models/
included). ``curate.calibration`` runs a reference set through the spine to gather the inputs."""

from __future__ import annotations

import numpy as np

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


def unit(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (zero rows stay zero): the one normalisation of
    embeddings. ``out=x`` normalises in place (no copy of a large matrix)."""
    n = np.sqrt(np.einsum("...d,...d->...", x, x))[..., None]  # no squared temporary, unlike linalg.norm
    return np.divide(x, np.maximum(n, 1e-12), out=out)


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
    """True-accept rate at the threshold where at most ``far`` of the impostor scores are
    accepted: genuine scores strictly above the (k+1)-th highest impostor, k = floor(far * n)."""
    if not len(genuine) or not len(impostor):
        return float("nan")
    neg = np.sort(np.asarray(impostor))[::-1]
    k = int(np.floor(far * len(neg)))
    thr = neg[k] if k < len(neg) else -np.inf
    return float(np.mean(np.asarray(genuine) > thr))


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
    emb = unit(np.asarray(emb, np.float64))
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
    tmpl = unit(tmpl)
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
                a, b = unit((e[p[:h]] * w[p[:h], None]).sum(0)), unit((e[p[h:]] * w[p[h:], None]).sum(0))
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
    out["support"], out["warnings"] = support(out["reference"], len(halves), int(genuine.size))
    why = collapsed(out)
    if why:
        out["collapsed"] = why
        out["warnings"].insert(0, f"the model looks collapsed ({why}): its calibration is not used; curate with the "
                                  "base model or train longer on more identities")
    return out


TAIL = 10  # a quantile is measured when at least this many samples lie beyond it


def support(ref: dict, halves: int, faces: int) -> tuple[dict, list[str]]:
    """For each figure of a calibration: the samples it rests on and the fewest it needs (TAIL beyond
    its quantile), and a warning for each that has fewer."""
    figures = {  # figure: (samples, share of them in the tail it is read from, what they are)
        "tar_at_far_0.001": (ref["impostor_pairs"], 1e-3, "impostor pairs"),
        "tar_at_far_0.0001": (ref["impostor_pairs"], 1e-4, "impostor pairs"),
        "far_angle": (faces, 1e-2, "faces (the genuine 99th percentile)"),
        "dup_cos": (ref["genuine_pairs"], 1e-4, "same-person pairs"),
        "merge_cos": (ref["identities"] * (ref["identities"] - 1) // 2, 5e-4, "pairs of identities"),
        "merge_cos (same person)": (halves, 1e-2, "half-identity pairs (identities of 4+ faces)"),
    }
    out, warnings = {}, []
    for name, (n, tail, what) in figures.items():
        need = int(np.ceil(TAIL / tail))
        out[name] = {"samples": int(n), "needed": need}
        if n < need:
            warnings.append(f"{name} rests on {n:,} {what}; it needs {need:,} ({TAIL} beyond its quantile): "
                            "a larger reference set, more identities, or set it by hand")
    return out, warnings


def collapsed(cal: dict) -> str | None:
    """Why a calibration looks like a collapsed model's (every face alike), or None."""
    g = cal.get("grid", GRID)
    gen, imp = at(cal["pair_cos"]["genuine"], 0.5, g), at(cal["pair_cos"]["impostor"], 0.5, g)
    th = cal["thresholds"]
    if imp > 0.9:
        return f"two different people's faces have a median cosine of {imp:.3f}"
    if gen - imp < 0.05:
        return f"same-person and different-person pairs are alike (median cosine {gen:.3f} vs {imp:.3f})"
    if th["far_angle"] < 10 or th["dup_cos"] >= 0.9995:
        return f"thresholds at their bounds (far angle {th['far_angle']:.1f} deg, duplicate cosine {th['dup_cos']:.4f})"
    return None


def shown(value: float, n: int) -> str:
    """A rate measured on n samples, with the decimals its standard error supports (at least 2)."""
    if value is None or not np.isfinite(value) or n <= 0:
        return "n/a"
    se = np.sqrt(max(value * (1 - value), 1.0 / n) / n)
    return f"{value:.{int(np.clip(np.ceil(-np.log10(se)), 2, 4))}f}"


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


def auc(orig: np.ndarray, bad: np.ndarray) -> float:
    """Share of (photo, degraded copy) pairs where the copy scores lower (ties count half)."""
    ok = np.isfinite(orig) & np.isfinite(bad)
    if not ok.any():
        return float("nan")
    return float(np.mean((bad[ok] < orig[ok]) + 0.5 * (bad[ok] == orig[ok])))
