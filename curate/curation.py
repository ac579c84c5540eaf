"""Scoring and selection over a whole run: reads the spine's ``images`` shards (embeddings only,
no crops), computes label-noise, duplicate and quality scores for every identity at once, decides
keep/reason, and writes

    OUT/scores/scores-<digest>.parquet        one row per image: every score and the decision
    OUT/identities-<digest>.parquet           one row per identity: size, kept, dominant share, review, merge
    OUT/calibration-<digest>.json             thresholds in use, where they came from (card or run), warnings
    OUT/summary-<digest>.json                 rows per reason; identities kept, dropped, merged, for review
    OUT/curated/part-NNNNNN-<digest>.parquet  the images rows with scores, sorted by identity then quality

<digest> covers the run config and the score config, so re-scoring with new thresholds writes new
files beside the old ones and never re-runs a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from curate.config import ScoreConfig
from curate.reasons import LABEL_NOISE, SCORING
from curate.schema import decode_embeddings
from curate.stages import dedup, nearest, score
from curate.stages.select import select
from curate.stats import NORM_GRID, combined_quality, signal_percentiles, unit

READ = ["image_id", "identity", "sha1", "embedding", "feat_norm", "model_id", "landmarks", "face_size", "det_score",
        "sharpness", "brightness", "contrast", "detail", "keep", "reason", "n_faces", "face_idx", "image_hash", "n_bytes", "width", "height", "source"]
# READ columns that a run made before them, or rows from elsewhere (score_table), may lack: null
LATER = {"image_hash": pa.binary(80), "n_bytes": pa.int64(), "width": pa.int32(), "height": pa.int32(),
         "brightness": pa.float32(), "contrast": pa.float32(), "detail": pa.float32(), "source": pa.string()}
COPY_COS = 0.7  # a copy of a photo is the same face: its hashes are looked at from this cosine on

EMPTY_DUPS = dedup.dup_table(*(np.zeros(0),) * 3, *(np.zeros(0, np.int64),) * 2, np.zeros(0, np.float32))
SCORED = ("angle_to_dominant", "quality", "own_sim", "dominant_share", "yaw", "pitch", "roll", "sharpness_pct",
          "det_score_pct", "norm_pct")  # float columns of score_identities, null where a row is not scored


def hashes_of(t: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(image_hash (N, WIDTH) uint8, (N,) present) of the rows of ``t``."""
    from curate.stages.phash import as_bytes

    return as_bytes(t["image_hash"])


def candidates(t: pa.Table) -> np.ndarray:
    """(N,) bool: rows scoring looks at - kept by the spine, with an embedding and an identity."""
    return (pc.fill_null(t["keep"], False).to_numpy(zero_copy_only=False)
            & pc.is_valid(t["embedding"]).to_numpy(zero_copy_only=False)
            & pc.is_valid(t["identity"]).to_numpy(zero_copy_only=False))


def unit_embeddings(c: pa.Table) -> np.ndarray:
    emb = decode_embeddings(c["embedding"]).astype(np.float32)  # (N, D): 2 KB a face at D = 512
    return unit(emb, out=emb)  # in place: no third copy


def signals_of(c: pa.Table) -> dict[str, np.ndarray]:
    """The face's quality signals (curate.quality.FEATURES but pose); NaN where a run predates one."""
    return {"norm": c["feat_norm"].to_numpy(zero_copy_only=False).astype(np.float32),
            **{k: (c[k].to_numpy(zero_copy_only=False).astype(np.float64) if k in c.column_names else np.full(len(c), np.nan))
               for k in ("sharpness", "det_score", "brightness", "contrast", "detail", "face_size")}}


def pose_of(c: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(yaw, pitch, roll) degrees from the rows' five landmarks; NaN where a row has none
    (embeddings from elsewhere)."""
    lm = pc.fill_null(c["landmarks"], pa.scalar([np.nan] * 10, c["landmarks"].type)).combine_chunks()
    return score.pose(lm.flatten().to_numpy(zero_copy_only=False).reshape(-1, 10))  # NaN in, NaN out


def quality_of(signals: dict[str, np.ndarray], ref: dict, emb: np.ndarray | None = None) -> np.ndarray:
    """0-100: the card's match probability (curate.quality) in percent, of faces with these signals
    and unit embeddings ``emb`` (for a model whose probe reads them); or, for a model without a
    match model (uncalibrated, a learned head, an older card), the geometric mean of the reference
    percentiles of its quality signals."""
    match = ref.get("quality", {}).get("match")
    if match is not None and "learned" not in signals:
        from curate.quality import probability

        return 100.0 * probability(match, signals, emb)
    return combined_quality(signals, ref)


def model_ids(t: pa.Table) -> set:
    return set(pc.unique(t["model_id"].filter(pc.is_valid(t["model_id"]))).to_pylist())


def merge_angle_of(cfg: ScoreConfig, cal: dict | None) -> float:
    """Sub-centers and identities are merged by the same rule: one person."""
    if cfg.merge_angle is not None:
        return cfg.merge_angle
    mc = (cal or {}).get("thresholds", {}).get("merge_cos")
    return float(np.degrees(np.arccos(mc))) if mc is not None else 45.0


PAIR_FLOOR = 0.9  # within-identity duplicate pairs are found from this cosine; the threshold is applied later


def pair_floor(cfg: ScoreConfig, cal: dict | None) -> float:
    """The cosine from which within-identity duplicate pairs are kept, under any duplicate
    threshold the scoring may pick: the user's, the card's, or the run's own cos(p1 / 6) >= cos(15 deg)."""
    known = [v for v in (cfg.dup_threshold, (cal or {}).get("thresholds", {}).get("dup_cos")) if v is not None]
    return min([PAIR_FLOOR, *known])


def score_identities(t: pa.Table, cfg: ScoreConfig, cal: dict | None, ref: dict,
                     merge_angle: float) -> tuple[pa.Table, pa.Table, np.ndarray, list, tuple]:
    """Everything that needs only an identity's own faces, for the identities of ``t`` (all of a
    run's, or one partition's: an identity is never split). -> (one row per row of ``t``: the
    sub-center, angle, quality, pose and cue columns; one row per identity, sorted by name;
    (I, D) dominant centers in that order; the quality signals in use; the exact duplicate pairs
    within identities from ``pair_floor`` on, and the copies by their hashes, as (r, c, cosine,
    copy) over the candidate rows).
    ``ref``: the quality reference (the card's calibration, or run_reference for an uncalibrated
    model). Pure."""
    n = len(t)
    idx = np.flatnonzero(candidates(t))
    c = t if len(idx) == n else t.take(pa.array(idx))  # no copy when every row is a candidate
    cols = {k: np.full(n, np.nan, np.float32) for k in SCORED}
    sub_col, dom_col, copy_of = np.full(n, -1, np.int8), np.zeros(n, bool), np.full(n, None, object)
    names, codes = identity_codes(c["identity"])
    ids = pa.table({"identity": pa.array(names, pa.string()), "faces": pa.array([], pa.int64()),
                    "dominant_share": pa.array([], pa.float32())}) if not len(idx) else None
    centers, used = np.zeros((0, 1), np.float32), list(ref.get("quality", {}).get("signals", ["norm"]))
    pairs = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, bool))
    if len(idx):
        emb = unit_embeddings(c)
        signals = signals_of(c)
        norms = signals["norm"]
        sc = _subcenters(emb, codes, len(names), norms, cfg, merge_angle)
        if cfg.quality_model:  # a learned quality head on the raw features, percentiles of its own reference
            from models.quality_head import with_quality_model

            signals["learned"], ref = with_quality_model(cfg.quality_model, emb * norms[:, None], ref)
        used = list(ref.get("quality", {}).get("signals", ["norm"]))
        pct = signal_percentiles({k: signals[k] for k in ("norm", "sharpness", "det_score")}, ref)
        yaw, pitch, roll = pose_of(c)
        signals.update(yaw=yaw, pitch=pitch)
        # own similarity without the face itself (as the angle), to the full template if it is alone
        own = np.where(np.isfinite(sc.angle), np.cos(np.radians(sc.angle)), score.rowdot(emb, sc.centers, codes))
        for k, v in (("angle_to_dominant", sc.angle), ("quality", quality_of(signals, ref, emb)), ("own_sim", own),
                     ("dominant_share", sc.share[codes]), ("yaw", yaw), ("pitch", pitch), ("roll", roll),
                     ("sharpness_pct", pct["sharpness"]), ("det_score_pct", pct["det_score"]), ("norm_pct", pct["norm"])):
            cols[k][idx] = v
        sub_col[idx], dom_col[idx] = sc.subcenter, sc.is_dominant
        centers = sc.centers
        hashes = hashes_of(c)
        pairs = dedup.identity_pairs(emb, codes, pair_floor(cfg, cal), hashes, COPY_COS)
        worse, better = dedup.unmatched_copies(emb, codes, hashes, cols["quality"][idx], COPY_COS)
        copy_of[idx[worse]] = c["image_id"].take(pa.array(better)).to_pylist()
        ids = pa.table({"identity": pa.array(names, pa.string()), "faces": pa.array(sc.size, pa.int64()),
                        "dominant_share": pa.array(sc.share, pa.float32())})
    cand = np.zeros(n, bool)
    cand[idx] = True
    m = {k: pa.array(v, mask=np.isnan(v)) for k, v in cols.items()}  # null, not NaN, where not scored
    part = pa.table({
        "image_id": t["image_id"], "identity": t["identity"], "spine_reason": t["reason"],
        "subcenter": pa.array(sub_col, pa.int8(), mask=sub_col < 0), "is_dominant": pa.array(np.where(cand, dom_col, True)),
        "angle_to_dominant": m["angle_to_dominant"], "dominant_share": m["dominant_share"], "quality": m["quality"],
        "norm_pct": m["norm_pct"], "yaw": m["yaw"], "pitch": m["pitch"], "roll": m["roll"], "sharpness": t["sharpness"],
        "sharpness_pct": m["sharpness_pct"], "det_score": t["det_score"], "det_score_pct": m["det_score_pct"],
        "face_size": t["face_size"], "own_sim": m["own_sim"], "unmatched_copy_of": pa.array(copy_of.tolist(), pa.string()),
    })
    if "face_idx" in t.column_names:  # the face the row stands for (scoring may pick another one of a group photo)
        part = part.append_column("face_idx", t["face_idx"].cast(pa.int16()))
    return part, ids, centers, used, pairs


def _subcenters(emb: np.ndarray, codes: np.ndarray, n_ids: int, norms: np.ndarray, cfg: ScoreConfig,
                merge_angle: float) -> score.Subcenters:
    """The identities' sub-centers by spherical k-means, or by a sub-center ArcFace head fitted on
    the embeddings (``cfg.mode``)."""
    assign = init = None
    if cfg.mode == "head":
        from models.heads.subcenter_arcface import fit_on_embeddings

        assign, init = score.kmeans_subcenters(emb, codes, n_ids, cfg.k, cfg.iters)
        assign, init = fit_on_embeddings(emb, codes, n_ids, cfg.k, init=init, epochs=cfg.head_epochs)
    return score.subcenters(emb, codes, n_ids, norms, cfg.k, cfg.iters, merge_angle, assign, init)


def identity_templates(t: pa.Table, cfg: ScoreConfig, merge_angle: float) -> tuple[list, np.ndarray]:
    """(identity names sorted, (I, D) dominant centers) of the candidate rows of ``t``: the centers
    score_identities finds, without the rest of its work."""
    c = t.filter(pa.array(candidates(t)))
    names, codes = identity_codes(c["identity"])
    if not len(c):
        return names, np.zeros((0, 1), np.float32)
    norms = c["feat_norm"].to_numpy(zero_copy_only=False).astype(np.float32)
    return names, _subcenters(unit_embeddings(c), codes, len(names), norms, cfg, merge_angle).centers


def codes_known(names: list, identity: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(N,) position of each row's identity in ``names`` (sorted), and whether it is there at all."""
    code = codes_in(names, identity)
    if not len(names):
        return code, np.zeros(len(code), bool)
    known = (code < len(names)) & (np.asarray(names, object)[np.minimum(code, len(names) - 1)]
                                   == np.asarray(identity.to_pylist(), object))
    return code, known


def identity_codes(identity: pa.ChunkedArray | pa.Array) -> tuple[list[str], np.ndarray]:
    """(identity names sorted, (N,) code of each row in that list): the same codes for an identity
    whether a run is scored whole or by partitions."""
    enc = pc.dictionary_encode(identity).combine_chunks() if len(identity) else None
    if enc is None:
        return [], np.zeros(0, np.int64)
    names = np.array(enc.dictionary.to_pylist(), dtype=object)
    order = np.argsort(names.astype(str), kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return names[order].tolist(), rank[enc.indices.to_numpy()]


@dataclass
class Globals:
    """What needs every identity: thresholds, nearest other identities, merge candidates. No
    process holds every identity's center but the index (nearest.center_index), read from a file."""

    names: list  # every scored identity, sorted
    thresholds: score.Thresholds
    into: dict  # identity -> the identity it merges into
    merge_sim: dict  # identity -> its best merge cosine
    index: object = None  # nearest.center_index over every center: searched by every partition
    neighbours: np.ndarray | None = None  # (I, K) every identity's look-alikes (nearest.lookalikes)
    scan: object = None  # nearest.center_scan: every center compressed, for faces that match no identity

    def codes(self, identity: pa.ChunkedArray | pa.Array) -> np.ndarray:
        return codes_in(self.names, identity)

    def groups(self) -> np.ndarray:
        """(I,) the code of the identity each identity merges into (its own where none)."""
        group = np.arange(len(self.names))
        if self.into:
            group[self.codes(pa.array(list(self.into)))] = self.codes(pa.array(list(self.into.values())))
        return group


def codes_in(names: list, identity: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(N,) position of each row's identity in ``names`` (sorted, as identity_codes sorts them)."""
    return np.searchsorted(np.array(names, dtype=object).astype(str), np.asarray(identity.to_pylist(), str))


def merges_of(names: list, sizes: np.ndarray, pairs: list[tuple[int, int, float]]) -> tuple[dict, dict]:
    """(identity -> the identity it merges into, identity -> its best merge cosine) from the merge
    candidates' pairs of codes (nearest.merge_candidates)."""
    best: dict = {}
    for a, b, sim in pairs:
        for i in (a, b):
            best[names[i]] = max(best.get(names[i], -1.0), sim)
    return merge_groups(names, sizes, pairs), best


def merge_groups(names: list, sizes: np.ndarray, merges: list[tuple[int, int, float]]) -> dict:
    """identity -> the identity it merges into: the merge pairs' connected components (a chain of
    three labels of one person is one group), each folded into its largest identity (ties: the
    first name). Roots are not keys."""
    if not merges:
        return {}
    a, b = np.array([m[0] for m in merges]), np.array([m[1] for m in merges])
    n = len(names)
    _, comp = connected_components(sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    linked = np.unique(np.r_[a, b])
    order = linked[np.lexsort((linked, -np.asarray(sizes)[linked]))]  # largest first, then by name
    root = {}
    for i in order:
        root.setdefault(comp[i], i)
    return {names[i]: names[root[comp[i]]] for i in linked.tolist() if root[comp[i]] != i}


def decide(t: pa.Table, part: pa.Table, g: Globals, dups: pa.Table, cfg: ScoreConfig, unidentifiable: tuple[float, float] | None,
           near: pa.Table | None = None) -> pa.Table:
    """Rows of ``t`` with their ``score_identities`` columns (``part``), the run's globals and the
    duplicate (copy) and near-identical clusters touching them -> the scores with keep, reason,
    quality_rank. ``unidentifiable``: ``unidentifiable_below``'s pair. Pure."""
    near = EMPTY_DUPS if near is None else near
    n = len(t)
    cand = candidates(t)
    idx = np.flatnonzero(cand)
    other_name, osim = np.full(n, None, object), np.full(n, np.nan, np.float32)
    if len(idx):
        c = t.take(pa.array(idx))
        # a float16 view of the shards: searched (and normalised) chunk by chunk
        other, s = nearest.nearest_other_identity(decode_embeddings(c["embedding"]), g.codes(c["identity"]), g.index,
                                                g.groups(), g.neighbours, np.cos(np.radians(g.thresholds.far_angle)),
                                                g.scan)
        other_name[idx] = np.where(other >= 0, np.array(g.names + [None], dtype=object)[other], None)
        osim[idx] = s
    at = pc.index_in(t["image_id"], value_set=dups["image_id"])
    dup_sim = pc.fill_null(dups["dup_sim"].take(at), 0.0).to_numpy(zero_copy_only=False).astype(np.float32)
    dup_sim[~cand] = np.nan
    keys = pa.array(list(g.into), pa.string())
    into = pa.array(list(g.into.values()), pa.string()).take(pc.index_in(t["identity"], value_set=keys))
    scores = part
    at_own = part.schema.get_field_index("own_sim")  # the duplicate, merge and nearest-identity columns go before it
    for name, col in reversed([("dup_of", dups["dup_of"].take(at)), ("dup_sim", pa.array(dup_sim, mask=np.isnan(dup_sim))),
                               ("merge_into", pc.if_else(pa.array(cand), into, pa.nulls(n, pa.string()))),
                               ("nearest_other_identity", pa.array(other_name.tolist(), pa.string()))]):
        scores = scores.add_column(at_own, name, col)
    at_near = pc.index_in(t["image_id"], value_set=near["image_id"])
    scores = (scores.append_column("other_sim", pa.array(osim, mask=np.isnan(osim)))
              .append_column("near_identical_of", near["dup_of"].take(at_near))
              .append_column("near_sim", near["dup_sim"].take(at_near))
              .append_column("dup_identity", dups["dup_identity"].take(at)))
    out = select(scores, cfg, g.thresholds.far_angle, unidentifiable).drop_columns(["dup_identity"])
    # one person under several labels: trained as the group's largest label (--merge relabel)
    merged = pc.is_valid(into) if cfg.merge == "relabel" else pa.array(np.zeros(n, bool))
    return (out.append_column("label", pc.if_else(merged, into, t["identity"]))
            .append_column("merged_from", pc.if_else(merged, t["identity"], pa.nulls(n, pa.string()))))


def finish_identities(ids: pa.Table, g: Globals, scores: pa.Table, cfg: ScoreConfig) -> pa.Table:
    """The identities of ``ids`` with review, merge, kept and noise columns from their scores."""
    names = ids["identity"].to_pylist()
    out = ids.append_column("review", pc.less(ids["dominant_share"], cfg.min_dominant_share))
    out = out.append_column("merge_into", pa.array([g.into.get(x) for x in names], pa.string()))
    out = out.append_column("merge_sim", pa.array([g.merge_sim.get(x) for x in names], pa.float64()))
    relabel = cfg.merge == "relabel"
    out = out.append_column("label", pa.array([g.into.get(x, x) if relabel else x for x in names], pa.string()))
    return _noise_rates(out.append_column("kept", kept_per_identity(out, scores)), scores)


def no_identities() -> pa.Table:
    """The identities table of a run with no scored face: every column, no row."""
    ids = pa.table({"identity": pa.array([], pa.string()), "faces": pa.array([], pa.int64()),
                    "dominant_share": pa.array([], pa.float32())})
    scores = pa.table({"identity": pa.array([], pa.string()), "keep": pa.array([], pa.bool_()),
                       "reason": pa.array([], pa.string())})
    return finish_identities(ids, Globals([], None, {}, {}), scores, ScoreConfig())


def calibration_record(g: Globals | None, cal: dict | None, merge_angle: float, model_id: str | None,
                       signals: list) -> dict:
    calib = {"model_id": model_id, "calibrated": cal is not None, "far_angle": None,
             "merge_angle": round(merge_angle, 2), "warnings": [], "reference": (cal or {}).get("reference")}
    if g is not None:
        th = g.thresholds
        calib.update({"quality_signals": signals, "far_angle": th.far_angle, "dup_cos": th.dup_cos,
                      "merge_cos": th.merge_cos, "threshold_source": th.source, "run_impostor_angle_p1": th.run_impostor_p1,
                      "quality_reference": "card" if cal else "run", "warnings": list(th.warnings)})
        match = (cal or {}).get("quality", {}).get("match")
        if match:  # what quality is, and what it does for recognition on the card's held-out people
            calib["quality"] = {k: match.get(k) for k in ("signals", "operating_point", "unidentifiable_below", "unmatched_below",
                                                          "reference_below", "why", "edc",
                                                          "edc_alone", "edc_curves")}
        if cal is None:
            calib["warnings"].append("quality is a percentile of this run's own norms (the model has no calibrated "
                                     "norm reference): it ranks faces within this run, and no face is rejected as "
                                     "unidentifiable")
        elif not match:
            calib["warnings"].append("the calibration has no quality model (a card older than quality as the chance of "
                                     "matching, or a reference without degraded copies): quality is a percentile of "
                                     "its reference norms and no face is rejected as unidentifiable; `curate "
                                     "calibrate` fits one")
    return calib


def reason_counts(scores: pa.Table) -> dict[str, int]:
    return {r["values"]: r["counts"] for r in pc.value_counts(scores["reason"]).to_pylist()}


def kept_per_identity(identities: pa.Table, scores: pa.Table) -> pa.Array:
    """Kept faces of each identity of ``identities``, from the scores' ``keep``."""
    kept = pc.value_counts(scores.filter(scores["keep"])["identity"])
    kc = {d["values"]: d["counts"] for d in kept.to_pylist()}
    return pa.array([kc.get(i, 0) for i in identities["identity"].to_pylist()], pa.int64())


def _noise_rates(identities: pa.Table, scores: pa.Table, z: float = 1.96) -> pa.Table:
    """Per identity: faces flagged as label noise, that share of its scored faces, and a Wilson
    95% interval around it (an identity of 4 faces with 0 flagged may still be 49% noise)."""
    flagged = pc.value_counts(scores.filter(pc.is_in(scores["reason"], pa.array(LABEL_NOISE)))["identity"])
    fc = {d["values"]: d["counts"] for d in flagged.to_pylist()}
    k = np.array([fc.get(i, 0) for i in identities["identity"].to_pylist()], np.float64)
    n = np.maximum(identities["faces"].to_numpy().astype(np.float64), 1)
    p = k / n
    mid, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (identities.append_column("label_flags", pa.array(k.astype(np.int64)))
            .append_column("noise_rate", pa.array(p.astype(np.float32)))
            .append_column("noise_rate_lo", pa.array(np.clip(mid - half, 0, 1).astype(np.float32)))
            .append_column("noise_rate_hi", pa.array(np.clip(mid + half, 0, 1).astype(np.float32))))


FLAG_WARN_SHARE = 0.05  # a scoring flag rejecting more of the scored faces than this is reported loudly


def flag_warnings(counts: dict[str, int], scored: int) -> list[str]:
    """A warning per scoring flag that rejects more than FLAG_WARN_SHARE of the scored faces
    (``counts``: rows per reason)."""
    if not scored:
        return []
    return [f"{r} rejects {n} of {scored} scored faces ({n / scored:.0%}): more than a clean crawl would lose; "
            "look at its gallery in the report before trusting it"
            for r, n in counts.items() if r in SCORING and n > FLAG_WARN_SHARE * scored]


def run_reference(signals: dict[str, np.ndarray]) -> dict:
    """A stand-in calibration from the run's own signal distributions (uncalibrated models)."""
    def q(v):
        v = v[np.isfinite(v)]
        return {"grid": list(NORM_GRID), "quantiles": np.quantile(v, NORM_GRID).tolist() if len(v) else []}

    return {"norm": q(signals["norm"]), "cues": {k: q(v) for k, v in signals.items() if k != "norm"},
            "quality": {"signals": ["norm"]}}
