"""The scoring's one driver, and its entry points. ``curate.partitioned`` runs the steps
(``curate.curation``'s kernels) partition by partition over a work directory, with a mapper (in
process, or Ray's); everything here goes through it:

``score_run``     a run directory: its spine shards, its card's calibration, its reviews; writes
                  the scores, identities, calibration, summary and curated shards of a scoring and
                  makes it current (under the run's lock, last, once everything is written).
``score_table``   an in-memory table of the spine's rows: the same driver over one partition in
                  a temporary directory, so that the two agree by construction.
``score_digest``, ``run_calibration``: what names a scoring, and the calibration it uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import curation as C
from curate import partitioned as P
from curate.config import ScoreConfig
from curate.errors import InputError
from curate.files import write_json
from curate.io.lock import run_lock
from curate.io.shards import ShardStore
from curate.stages.select import unidentifiable_below


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
        card, where = store.recognizer_card(), store.recognizer_card_file()
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


def score_table(t: pa.Table, cfg: ScoreConfig, cal: dict | None = None, reviews: pa.Table | None = None,
                detections: pa.Table | None = None) -> tuple[pa.Table, pa.Table, dict]:
    """Spine rows (curate.curation.READ columns) -> (scores per row in its order, identities,
    calibration in use): the driver over one partition, in a temporary directory. ``cal``: the
    recognizer card's calibration (curate.calibration), or None for an uncalibrated model;
    ``detections``: the faces of the group photos among the rows (scoring picks the labelled one)."""
    from curate import reviews as R

    with tempfile.TemporaryDirectory(prefix="facecurate-score-") as d:
        os.makedirs(os.path.dirname(ShardStore(d).curated_file(0, "table")))
        f, det = os.path.join(d, "spine.parquet"), None
        if "n_faces" not in t.column_names:  # rows from elsewhere: one face per row that has an embedding
            face = pc.is_valid(t["embedding"])
            t = t.append_column("n_faces", pc.cast(face, pa.int16()))
        if "face_idx" not in t.column_names:
            t = t.append_column("face_idx", pc.if_else(pc.greater(t["n_faces"], 0), pa.scalar(0, pa.int16()),
                                                       pa.scalar(None, pa.int16())))
        pq.write_table(t, f)
        if detections is not None:
            det = os.path.join(d, "detections.parquet")
            pq.write_table(detections, det)
        work, calib, _ = P.score_partitioned(os.path.join(d, "work"), d, [(0, f, det)], cfg, cal,
                                             R.REVIEWS.empty_table() if reviews is None else reviews, "table",
                                             part_rows=max(len(t), 1))
        P.stream_outputs(work, os.path.join(d, "scores.parquet"), os.path.join(d, "identities.parquet"))
        return pq.read_table(os.path.join(d, "scores.parquet")), pq.read_table(os.path.join(d, "identities.parquet")), calib


def score_run(out: str, cfg: ScoreConfig, calibration: str | None = None, mapper=None,
              part_rows: int | None = None) -> dict:
    """Score the run in ``out``, partition by partition; ``calibration``: a
    model card whose calibration to use instead of the one recorded with the run; ``mapper``: runs
    a step over its partitions (in process by default; flows pass Ray's). Holds the run's lock
    (one writer at a time) and makes the new scoring current only once every file it names is
    written."""
    store = ShardStore.of(out)
    with run_lock(store.out):
        return _score_run(store, cfg, calibration, mapper, part_rows)


THRESHOLDS = {"far_angle": "{:.1f}", "dup_cos": "{:.4f}", "merge_cos": "{:.4f}", "unidentifiable_below": "{:.1f}",
              "unmatched_below": "{:.1f}"}


def threshold_changes(previous: dict | None, now: dict) -> list[str]:
    """Each threshold that differs from the previous scoring's, as 'far_angle 70.0 -> 78.2 (card)'."""
    out = []
    for k, fmt in THRESHOLDS.items():
        a, b = (previous or {}).get(k), now.get(k)
        shown = [("none" if v is None else fmt.format(v)) for v in (a, b)]
        if previous is not None and shown[0] != shown[1]:
            out.append(f"{k} {shown[0]} -> {shown[1]} ({(now.get('threshold_source') or {}).get(k, '?')})")
    return out


def _score_run(store: ShardStore, cfg: ScoreConfig, calibration: str | None, mapper, part_rows: int | None) -> dict:
    from curate import reviews as R

    out = store.out
    shards = [s for s in range(store.manifest["shards"]) if store.is_complete(s)]
    if not shards:
        raise InputError(f"{out}: no completed shards to score")
    t0 = time.perf_counter()
    before = store.current_scoring()
    previous = store._json(store.summary_file(before)) if before else None
    cal, cal_where, cal_warnings = run_calibration(store, calibration)
    reviews = R.read(out)
    digest = score_digest(store, cfg, cal, R.digest_part(out))
    for f in (store.scores_file(digest), store.curated_file(0, digest)):
        os.makedirs(os.path.dirname(f), exist_ok=True)
    work, calib, overrides = P.score_partitioned(
        store.scoring_work(digest), store.out,
        [(s, store.shard_path("images", s), store.shard_path("detections", s)) for s in shards], cfg, cal,
        reviews, digest, part_rows or P.PART_ROWS, mapper or P.local_map, store.config().detect.min_face_size)
    calib["card"] = cal_where
    calib["warnings"] = cal_warnings + calib["warnings"]
    below = unidentifiable_below(cfg, cal) or (None, None)
    for k, v in zip(("unidentifiable_below", "unmatched_below"), below):
        calib[k] = v
        calib.setdefault("threshold_source", {})[k] = "config" if getattr(cfg, k) is not None else "card" if v is not None else "none"
    plan = work.plan
    P.stream_outputs(work, store.scores_file(digest), store.identities_file(digest), store.group_faces_file(digest))
    write_json(store.calibration_file(digest), {**calib, "config": cfg.__dict__, "digest": digest})
    P.remove(work)
    seconds = time.perf_counter() - t0
    scores = pq.read_table(store.scores_file(digest), columns=["keep", "reason"])
    identities = pq.read_table(store.identities_file(digest))
    summary = {
        "out": store.out, "score_digest": digest, "images": len(scores), "kept": int(pc.sum(scores["keep"]).as_py() or 0),
        "reasons": dict(sorted(C.reason_counts(scores).items(), key=lambda kv: -kv[1])),
        "review_overrides": overrides,
        "identities": len(identities),
        "identities_kept": int(pc.sum(pc.greater(identities["kept"], 0)).as_py() or 0),
        "identities_review": int(pc.sum(identities["review"]).as_py() or 0),
        "identities_merged": int(pc.sum(pc.is_valid(identities["merge_into"])).as_py() or 0),
        "persons": len(pc.unique(identities["label"])), "merge": cfg.merge,
        "far_angle": calib["far_angle"], "dup_cos": calib.get("dup_cos"), "merge_cos": calib.get("merge_cos"),
        "merge_angle": calib.get("merge_angle"), "unidentifiable_below": calib["unidentifiable_below"],
        "unmatched_below": calib["unmatched_below"],
        "threshold_source": calib.get("threshold_source"),
        "calibrated": calib["calibrated"], "warnings": calib["warnings"], "score_seconds": round(seconds, 2),
        "partitions": plan["partitions"], "previous_scoring": before,
    }
    summary["changes"] = threshold_changes(previous, summary)
    summary["identities_dropped"] = summary["identities"] - summary["identities_kept"]
    write_json(store.summary_file(digest), summary)
    store.set_current_scoring(digest, cfg.__dict__, calibration)  # last: every file it names exists
    store.write_views()
    return summary
