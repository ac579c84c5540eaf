"""Group photos: the labelled person's face among a photo's faces, chosen by the label's template
(the identity's dominant center from its photos with one clear face).

The spine embeds every face of a photo (up to DetectConfig.max_faces) into ``detections``; the
scorer (curate.partitioned, step ``identities``) hands ``pick_faces`` the faces of its partition's
photos with several, and scores the row with the face picked. Pure over Arrow tables.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.curation import codes_known, unit_embeddings
from curate.stages import score

FACE = ["embedding", "feat_norm", "landmarks", "face_size", "det_score", "sharpness", "brightness", "contrast", "detail"]  # what a picked face replaces
PICK_ODDS = 100.0  # a group photo's face is taken when it is the labelled person at these odds against the runner-up
PICK_MARGIN = 15.0  # degrees: the same, for a model with no calibrated angle distributions
CANDIDATE_FAR = 1e-3  # a face is listed as a candidate for another identity at this false-match rate
NO_PICKS = pa.table({"image_id": pa.array([], pa.string()), "face_idx": pa.array([], pa.int16()),
                     "angle": pa.array([], pa.float32()), "runner_up": pa.array([], pa.float32()),
                     "detail": pa.array([], pa.string())})
NO_GROUP_FACES = pa.table({"image_id": pa.array([], pa.string()), "identity": pa.array([], pa.string()),
                           "face_idx": pa.array([], pa.int16()), "role": pa.array([], pa.string()),
                           "nearest_other_identity": pa.array([], pa.string()), "other_sim": pa.array([], pa.float32()),
                           "candidate_for": pa.array([], pa.string())})


def candidate_cos(cal: dict | None, far_angle: float) -> float:
    """The cosine from which a face matches another identity's template: the card's impostor
    angle at CANDIDATE_FAR (one stranger in a thousand comes this close), else half the far angle."""
    from curate.stats import GRID, at

    if cal and "angle_to_center" in cal:
        return float(np.cos(np.radians(at(cal["angle_to_center"]["impostor"], CANDIDATE_FAR, cal.get("grid", GRID)))))
    return float(np.cos(np.radians(far_angle / 2)))


def group_faces(faces: pa.Table, picks: pa.Table, index, names: list, groups: np.ndarray,
                candidate_cos: float) -> pa.Table:
    """One row per face of the group photos (``faces``: image_id, face_idx, identity, embedding):
    whether it is the face picked for the photo's label, or ``other_face``; its nearest identity
    other than the label's (``index``: the scoring's center index over ``names``; ``groups``: merge
    groups) and that cosine; and ``candidate_for`` that identity when the face matches it at the
    card's same-person threshold (``candidate_cos``): a photo of B filed under A, listed, never
    added to B unless a reviewer does."""
    from curate.stages import nearest

    n = len(faces)
    at = pc.index_in(faces["image_id"], value_set=picks["image_id"])
    picked = pc.fill_null(pc.equal(faces["face_idx"], picks["face_idx"].take(at)), False)
    near, sim = np.full(n, None, object), np.full(n, np.nan, np.float32)
    if n and index is not None:
        code, known = codes_known(names, faces["identity"])
        # a label with no template of its own (no photo with one clear face): no group to leave out
        other, s = nearest.nearest_other_identity(unit_embeddings(faces), np.where(known, code, len(names)), index,
                                                np.r_[groups, -1])
        ok = other >= 0
        near[ok] = np.asarray(names, object)[other[ok]]
        sim[ok] = s[ok]
    cand = np.where(sim >= candidate_cos, near, None)
    return pa.table({"image_id": faces["image_id"], "identity": faces["identity"], "face_idx": faces["face_idx"],
                     "role": pc.if_else(picked, "picked", "other_face"),
                     "nearest_other_identity": pa.array(near.tolist(), pa.string()),
                     "other_sim": pa.array(sim, mask=np.isnan(sim)),
                     "candidate_for": pa.array(cand.tolist(), pa.string())})


def _log_density(dist: list, x: np.ndarray, grid, h: float = 2.5) -> np.ndarray:
    """log of a stored angle distribution's density at x (deg), from its CDF over +-h degrees;
    floored at 1e-6 a degree in the tails."""
    from curate.stats import cdf

    return np.log(np.maximum((cdf(dist, x + h, grid) - cdf(dist, x - h, grid)) / (2 * h), 1e-6))


def pick_faces(t: pa.Table, faces: pa.Table, names: list, centers: np.ndarray, cal: dict | None,
               far_angle: float) -> tuple[pa.Table, pa.Table]:
    """The labelled person's face in each photo with several faces. ``faces``: the detections of
    those photos (image_id, face_idx and the FACE columns); ``names``/``centers``: identity
    templates from the unambiguous faces. A face is taken when it is within ``far_angle`` of its
    label's template and, against the runner-up, the likelihood ratio of the card's genuine and
    impostor angle distributions (this face is the person and the other a stranger, versus the
    reverse) is at least PICK_ODDS; with no calibration, when it is PICK_MARGIN degrees nearer.
    -> (``t`` with the picked faces' columns in their rows, spine reason ``ok``; one row per photo
    with several faces: image_id, picked face_idx or null, its angle, the runner-up's, detail)."""
    n_faces = pc.fill_null(t["n_faces"], 0).to_numpy(zero_copy_only=False)
    spine = np.array(t["reason"].to_pylist(), object)
    rows = np.flatnonzero((n_faces > 1) & np.isin(spine, ("ok", "multi_face_ambiguous")) & pc.is_valid(t["identity"]).to_numpy(zero_copy_only=False))
    if not len(rows) or not len(faces) or not len(names):
        return t, NO_PICKS
    photo = t["image_id"].take(pa.array(rows))
    f = faces.filter(pc.and_(pc.is_in(faces["image_id"], value_set=photo), pc.is_valid(faces["embedding"])))
    gi = pc.index_in(f["image_id"], value_set=photo).to_numpy()  # the photo (position in rows) of each face
    code, known = codes_known(names, t["identity"].take(pa.array(rows)))  # a label with no one-face photo: no template
    emb = unit_embeddings(f)
    fc = np.where(known[gi], code[gi], 0)
    ang = np.degrees(np.arccos(np.clip(score.rowdot(emb, centers, fc), -1, 1))).astype(np.float32)
    ang[~known[gi]] = np.nan
    order = np.lexsort((np.nan_to_num(ang, nan=999.0), gi))
    g_sorted = gi[order]
    first = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
    best = order[first]  # the nearest face of each photo (photos with a face)
    has = g_sorted[first]
    second = np.full(len(rows), -1, np.int64)
    nxt = np.flatnonzero(first) + 1
    ok2 = (nxt < len(order)) & (np.r_[g_sorted, -1][np.minimum(nxt, len(order))] == has)
    second[has[ok2]] = order[nxt[ok2]]
    a1 = np.full(len(rows), np.nan, np.float32)
    a1[has] = ang[best]
    a2 = np.where(second >= 0, ang[np.maximum(second, 0)], np.nan).astype(np.float32)
    bi = np.full(len(rows), -1, np.int64)
    bi[has] = best
    if cal and "angle_to_center" in cal:
        from curate.stats import GRID

        grid, dist = cal.get("grid", GRID), cal["angle_to_center"]
        lr = (_log_density(dist["genuine"], a1, grid) + _log_density(dist["impostor"], a2, grid)
              - _log_density(dist["impostor"], a1, grid) - _log_density(dist["genuine"], a2, grid))
        clear = np.where(np.isnan(a2), True, lr >= np.log(PICK_ODDS))
    else:
        clear = np.where(np.isnan(a2), True, a2 - a1 >= PICK_MARGIN)
    take = (a1 <= far_angle) & clear & (bi >= 0)
    fidx = f["face_idx"].to_numpy()
    picked = np.where(take, fidx[np.maximum(bi, 0)], -1)
    detail = [f"face {p} of {n}: {x:.1f} deg, runner-up {y:.1f}" if p >= 0 else
              (f"no face within {far_angle:.1f} deg or none clearly nearer: {x:.1f} vs {y:.1f} deg" if np.isfinite(x)
               else "no template for the label") for p, n, x, y in zip(picked, n_faces[rows], a1, a2)]
    picks = pa.table({"image_id": photo, "face_idx": pa.array(picked, pa.int16(), mask=picked < 0),
                      "angle": pa.array(a1, mask=np.isnan(a1)), "runner_up": pa.array(a2, mask=np.isnan(a2)),
                      "detail": pa.array(detail, pa.string())})
    # the picked faces' columns into their rows; a photo with no clear pick keeps its spine face and reason
    src = np.full(len(t), -1, np.int64)
    src[rows[take]] = bi[take]
    changed = src >= 0
    at = pa.array(np.maximum(src, 0))
    out = t
    for col in (c for c in FACE if c in out.column_names and c in f.column_names):
        i = out.schema.get_field_index(col)
        new = f[col].take(at).cast(out.schema.field(col).type)
        out = out.set_column(i, col, pc.if_else(pa.array(changed), new, out[col]))
    fi = out.schema.get_field_index("face_idx")
    out = out.set_column(fi, "face_idx", pc.if_else(pa.array(changed), pa.array(fidx[np.maximum(src, 0)], pa.int16()),
                                                    out["face_idx"].cast(pa.int16())))
    for col, val in (("reason", "ok"), ("keep", True)):
        i = out.schema.get_field_index(col)
        out = out.set_column(i, col, pc.if_else(pa.array(changed), pa.scalar(val, out.schema.field(col).type), out[col]))
    return out, picks
