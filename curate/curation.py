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

import hashlib
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.calibration import NORM_GRID, combined_quality, signal_percentiles
from curate.config import ScoreConfig
from curate.errors import InputError
from curate.io.shards import ShardStore, atomic_write, write_json
from curate.schema import Reason, decode_embeddings
from curate.stages import dedup, score
from curate.stages.select import select

READ = ["image_id", "identity", "sha1", "embedding", "feat_norm", "model_id", "landmarks", "face_size", "det_score",
        "sharpness", "keep", "reason"]


def score_digest(store: ShardStore, cfg: ScoreConfig, cal: dict | None = None, reviews: list | None = None) -> str:
    """Names a scoring: the run, the thresholds and the calibration they were derived from, and
    the review decisions applied on top (none: the same digest as before reviews existed)."""
    key = {"run": store.manifest["digest"], "score": cfg.__dict__, "calibration": cal}
    if reviews:
        key["reviews"] = reviews
    blob = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def run_calibration(store: ShardStore, card_path: str | None = None) -> tuple[dict | None, str | None, list[str]]:
    """(calibration, where it came from, warnings) for the run's recognizer and detector: the card
    at ``card_path`` (a ``curate calibrate`` output), else the card the run recorded when it was
    planned. A card made for another model (its sha256 differs from the run's model id) is an
    error, not a silent mix."""
    from models.cards import pick_calibration, read_card

    if card_path:
        card, where = read_card(card_path), card_path
    else:
        card, where = store.recognizer_card(), store.path("recognizer.card.json")
    if not card:
        return None, None, []
    model_id = store.recognizer_id()
    sha = card.get("model_sha256") or card.get("sha256")
    if model_id and sha and "@" in model_id and not sha.startswith(model_id.rsplit("@", 1)[1]):
        raise InputError(f"{where} describes a model with sha256 {sha[:12]}..., but the run was embedded by "
                         f"{model_id}; calibrate that model (curate calibrate) or pass its own card")
    run_card = store.recognizer_card() or {}
    cal, warning = pick_calibration(card, run_card.get("detector_id") or store.config().detect.detector)
    return (cal, where if cal else None, [warning] if warning else [])


def score_table(t: pa.Table, cfg: ScoreConfig, cal: dict | None = None) -> tuple[pa.Table, pa.Table, dict]:
    """Images rows (READ columns) -> (scores per image, identities, calibration in use). ``cal``:
    the recognizer card's calibration (curate.calibration), or None for an uncalibrated model.
    Pure: no I/O."""
    n = len(t)
    cand = (pc.fill_null(t["keep"], False).to_numpy(zero_copy_only=False)
            & pc.is_valid(t["embedding"]).to_numpy(zero_copy_only=False)
            & pc.is_valid(t["identity"]).to_numpy(zero_copy_only=False))
    idx = np.flatnonzero(cand)
    models = set(pc.unique(t["model_id"].filter(pc.is_valid(t["model_id"]))).to_pylist())
    if len(models) > 1:
        raise InputError(f"one recognizer per scoring run, found {sorted(models)}")
    c = t if len(idx) == n else t.take(pa.array(idx))  # no copy when every row is a candidate
    emb = decode_embeddings(c["embedding"]).astype(np.float32)  # (N, D): 2 KB a face at D = 512
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)  # in place: no third copy
    norms = c["feat_norm"].to_numpy(zero_copy_only=False).astype(np.float32)
    enc = pc.dictionary_encode(c["identity"]).combine_chunks()
    codes, names = enc.indices.to_numpy().astype(np.int64), enc.dictionary.to_pylist()
    n_ids = len(names)
    merge_angle = cfg.merge_angle
    if merge_angle is None:  # sub-centers and identities are merged by the same rule: one person
        mc = (cal or {}).get("thresholds", {}).get("merge_cos")
        merge_angle = float(np.degrees(np.arccos(mc))) if mc is not None else 45.0
    calib = {"model_id": models.pop() if models else None, "calibrated": cal is not None, "far_angle": None,
             "merge_angle": round(merge_angle, 2), "warnings": [],
             "reference": (cal or {}).get("reference")}
    full = {k: np.full(n, np.nan, np.float32) for k in ("angle_to_dominant", "quality", "own_sim", "other_sim",
                                                       "dominant_share", "dup_sim", "yaw", "pitch", "roll",
                                                       "sharpness_pct", "det_score_pct", "norm_pct")}
    sub_col = np.full(n, -1, np.int8)
    dom_col = np.zeros(n, bool)
    dup_of = [None] * n
    merge_into = [None] * n
    other_name = [None] * n
    identities = pa.table({"identity": pa.array([], pa.string())})
    if len(idx):
        assign = centers = None
        if cfg.mode == "head":
            from models.heads.subcenter_arcface import fit_on_embeddings

            assign, centers = score.kmeans_subcenters(emb, codes, n_ids, cfg.k, cfg.iters)
            assign, centers = fit_on_embeddings(emb, codes, n_ids, cfg.k, init=centers, epochs=cfg.head_epochs)
        sc = score.subcenters(emb, codes, n_ids, norms, cfg.k, cfg.iters, merge_angle, assign, centers)
        th = score.thresholds(emb, codes, sc.centers, cfg, cal)
        calib["warnings"] += th.warnings
        signals = {"norm": norms, **{k: c[k].to_numpy(zero_copy_only=False).astype(np.float64)
                                     for k in ("sharpness", "det_score")}}
        ref = cal or run_reference(signals)  # an uncalibrated model: percentiles of this run, with a warning
        if cfg.quality_model:  # a learned quality head on the raw features, percentiles of its own reference
            from models.quality_head import with_quality_model

            signals["learned"], ref = with_quality_model(cfg.quality_model, emb * norms[:, None], ref)
        pct = signal_percentiles(signals, ref)
        qual = combined_quality(signals, ref).astype(np.float32)
        cues = {k: pct[k].astype(np.float32) for k in ("sharpness", "det_score")}
        calib["quality_signals"] = list(ref.get("quality", {}).get("signals", ["norm"]))
        lm = pc.fill_null(c["landmarks"], pa.scalar([0.0] * 10, c["landmarks"].type)).combine_chunks()
        yaw, pitch, roll = score.pose(lm.flatten().to_numpy(zero_copy_only=False).reshape(-1, 10))
        dups, dsim = dedup.near_duplicates(emb, qual, th.dup_cos, c["sha1"].to_pylist())
        other, osim = dedup.nearest_other_identity(emb, codes, sc.centers)
        # own similarity without the face itself (as the angle), to the full template if it is alone
        own = np.where(np.isfinite(sc.angle), np.cos(np.radians(sc.angle)), score.rowdot(emb, sc.centers, codes))
        merges = dedup.merge_candidates(sc.centers, th.merge_cos)
        # the smaller identity of a merge pair is folded into the larger one
        into = {}
        for a, b, _ in merges:
            small, big = (a, b) if sc.size[a] < sc.size[b] or (sc.size[a] == sc.size[b] and a > b) else (b, a)
            into.setdefault(small, big)
        ids_ = [str(x) for x in c["image_id"].to_pylist()]
        for j, i in enumerate(idx):
            if dups[j] >= 0:
                dup_of[i] = ids_[dups[j]]
            if codes[j] in into:
                merge_into[i] = names[into[codes[j]]]
            if other[j] >= 0:
                other_name[i] = names[other[j]]
        for k, v in (("angle_to_dominant", sc.angle), ("quality", qual), ("own_sim", own), ("other_sim", osim),
                     ("dominant_share", sc.share[codes]), ("dup_sim", dsim), ("yaw", yaw), ("pitch", pitch),
                     ("roll", roll), ("sharpness_pct", cues["sharpness"]), ("det_score_pct", cues["det_score"]),
                     ("norm_pct", pct["norm"].astype(np.float32))):
            full[k][idx] = v
        sub_col[idx], dom_col[idx] = sc.subcenter, sc.is_dominant
        calib.update({"far_angle": th.far_angle, "dup_cos": th.dup_cos, "merge_cos": th.merge_cos,
                      "threshold_source": th.source, "run_impostor_angle_p1": th.run_impostor_p1,
                      "quality_reference": "card" if cal else "run"})
        if cal is None:
            calib["warnings"].append("quality is a percentile of this run's own norms (the model has no calibrated "
                                     "norm reference): it ranks faces within this run, and no face is rejected as "
                                     "unidentifiable")
        identities = pa.table({
            "identity": names, "faces": sc.size, "dominant_share": sc.share,
            "review": sc.share < cfg.min_dominant_share,
            "merge_into": [names[into[i]] if i in into else None for i in range(n_ids)],
            "merge_sim": [max((s for a, b, s in merges if i in (a, b)), default=None) for i in range(n_ids)],
        })
    far = calib["far_angle"] if calib["far_angle"] is not None else 75.0
    full = {k: pa.array(v, mask=np.isnan(v)) for k, v in full.items()}  # null, not NaN, where not scored
    scores = pa.table({
        "image_id": t["image_id"], "identity": t["identity"], "spine_reason": t["reason"],
        "subcenter": pa.array(sub_col, pa.int8(), mask=sub_col < 0), "is_dominant": pa.array(np.where(cand, dom_col, True)),
        "angle_to_dominant": full["angle_to_dominant"], "dominant_share": full["dominant_share"],
        "quality": full["quality"], "norm_pct": full["norm_pct"], "yaw": full["yaw"], "pitch": full["pitch"], "roll": full["roll"],
        "sharpness": t["sharpness"], "sharpness_pct": full["sharpness_pct"], "det_score": t["det_score"],
        "det_score_pct": full["det_score_pct"], "face_size": t["face_size"],
        "dup_of": pa.array(dup_of, pa.string()), "dup_sim": full["dup_sim"],
        "merge_into": pa.array(merge_into, pa.string()),
        "nearest_other_identity": pa.array(other_name, pa.string()), "own_sim": full["own_sim"],
        "other_sim": full["other_sim"],
    })
    scores = select(scores, cfg, far, quality_rules=cal is not None)
    calib["warnings"] += flag_warnings(scores, len(idx))
    if len(identities):
        identities = _noise_rates(identities.append_column("kept", kept_per_identity(identities, scores)), scores)
    return scores, identities, calib


def kept_per_identity(identities: pa.Table, scores: pa.Table) -> pa.Array:
    """Kept faces of each identity of ``identities``, from the scores' ``keep``."""
    kept = pc.value_counts(scores.filter(scores["keep"])["identity"])
    kc = {d["values"]: d["counts"] for d in kept.to_pylist()}
    return pa.array([kc.get(i, 0) for i in identities["identity"].to_pylist()], pa.int64())


LABEL_FLAGS = ("far_from_dominant", "cross_id_conflict", "non_dominant_subcenter")


def _noise_rates(identities: pa.Table, scores: pa.Table, z: float = 1.96) -> pa.Table:
    """Per identity: faces flagged as label noise, that share of its scored faces, and a Wilson
    95% interval around it (an identity of 4 faces with 0 flagged may still be 49% noise)."""
    flagged = pc.value_counts(scores.filter(pc.is_in(scores["reason"], pa.array(LABEL_FLAGS)))["identity"])
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


def flag_warnings(scores: pa.Table, scored: int) -> list[str]:
    """A warning per scoring flag that rejects more than FLAG_WARN_SHARE of the scored faces."""
    if not scored:
        return []
    spine = set(r.value for r in Reason)
    out = []
    for r in pc.value_counts(scores["reason"]).to_pylist():
        if r["values"] not in spine and r["counts"] > FLAG_WARN_SHARE * scored:
            out.append(f"{r['values']} rejects {r['counts']} of {scored} scored faces ({r['counts'] / scored:.0%}): more "
                       "than a clean crawl would lose; look at its gallery in the report before trusting it")
    return out


def run_reference(signals: dict[str, np.ndarray]) -> dict:
    """A stand-in calibration from the run's own signal distributions (uncalibrated models)."""
    def q(v):
        v = v[np.isfinite(v)]
        return {"grid": list(NORM_GRID), "quantiles": np.quantile(v, NORM_GRID).tolist() if len(v) else []}

    return {"norm": q(signals["norm"]), "cues": {k: q(v) for k, v in signals.items() if k != "norm"},
            "quality": {"signals": ["norm"]}}


def score_run(out: str, cfg: ScoreConfig, calibration: str | None = None) -> dict:
    """Score the run in ``out``; ``calibration``: a model card whose calibration to use instead of
    the one recorded with the run."""
    store = ShardStore(out)
    if store.manifest is None:
        raise InputError(f"{out}: no run here (no run.json)")
    files = store.completed_files("images")
    if not files:
        raise InputError(f"{out}: no completed shards to score")
    t0 = time.perf_counter()
    cal, cal_where, cal_warnings = run_calibration(store, calibration)
    t = pq.ParquetDataset(files).read(columns=READ)
    scores, identities, calib = score_table(t, cfg, cal)
    from curate import reviews as R

    reviews = R.read(out)
    scores = R.apply(scores, reviews)  # a reviewer's decisions win; the automatic ones stay beside them
    if len(reviews) and len(identities):  # the reviewers' keep/reject changes the counts
        identities = identities.set_column(identities.schema.get_field_index("kept"), "kept",
                                           kept_per_identity(identities, scores))
    calib["card"] = cal_where
    calib["warnings"] = cal_warnings + calib["warnings"]
    seconds = time.perf_counter() - t0
    digest = score_digest(store, cfg, cal, R.digest_part(out))
    for d in ("scores", "curated"):
        os.makedirs(os.path.join(store.out, d), exist_ok=True)
    atomic_write(os.path.join(store.out, "scores", f"scores-{digest}.parquet"), lambda tmp: pq.write_table(scores, tmp))
    atomic_write(os.path.join(store.out, f"identities-{digest}.parquet"), lambda tmp: pq.write_table(identities, tmp))
    write_json(os.path.join(store.out, f"calibration-{digest}.json"), {**calib, "config": cfg.__dict__, "digest": digest})
    _write_curated(store, files, scores, digest)
    store.set_current_scoring(digest, cfg.__dict__, calibration)
    store.write_views()
    reasons = pc.value_counts(scores["reason"]).to_pylist()
    has_ids = len(identities) > 0
    summary = {
        "out": store.out, "score_digest": digest, "images": len(scores), "kept": int(pc.sum(scores["keep"]).as_py() or 0),
        "reasons": dict(sorted(((r["values"], r["counts"]) for r in reasons), key=lambda kv: -kv[1])),
        "review_overrides": R.overrides(scores),
        "identities": len(identities),
        "identities_kept": int(pc.sum(pc.greater(identities["kept"], 0)).as_py() or 0) if has_ids else 0,
        "identities_review": int(pc.sum(identities["review"]).as_py() or 0) if has_ids else 0,
        "identities_merged": int(pc.sum(pc.is_valid(identities["merge_into"])).as_py() or 0) if has_ids else 0,
        "far_angle": calib["far_angle"], "dup_cos": calib.get("dup_cos"), "merge_cos": calib.get("merge_cos"),
        "merge_angle": calib.get("merge_angle"), "threshold_source": calib.get("threshold_source"),
        "calibrated": calib["calibrated"], "warnings": calib["warnings"], "score_seconds": round(seconds, 2),
    }
    summary["identities_dropped"] = summary["identities"] - summary["identities_kept"]
    write_json(os.path.join(store.out, f"summary-{digest}.json"), summary)
    return summary


def _write_curated(store: ShardStore, files: list[str], scores: pa.Table, digest: str) -> None:
    """Each spine shard's rows joined with their scores, sorted by identity then quality (crawls
    laid out by identity - folders, .rec, TSV - come out sorted across shards too)."""
    extra = [c for c in scores.column_names if c not in ("image_id", "identity", "sharpness", "det_score", "face_size")]
    pos = {k: i for i, k in enumerate(scores["image_id"].to_pylist())}
    for f in files:
        part = pq.read_table(f).drop_columns(["keep", "reason"])
        # one score row per image: a take by position (Arrow's hash join rejects fixed-size lists)
        take = pa.array([pos[k] for k in part["image_id"].to_pylist()], pa.int64())
        for c in extra:
            part = part.append_column(c, scores[c].take(take))
        joined = part.sort_by([("identity", "ascending"), ("quality_rank", "ascending")])
        name = os.path.basename(f).rsplit("-", 1)[0] + f"-{digest}.parquet"
        atomic_write(os.path.join(store.out, "curated", name), lambda tmp, j=joined: pq.write_table(j, tmp))
