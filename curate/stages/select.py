"""select: scores -> keep, reason, is_<reason>, quality_rank. Pure over one table; thresholds from
ScoreConfig.

Precedence (first that applies): the spine's own reason (decode, no face, ...), then the scoring
reasons in the registry's order (curate.reasons.SCORING): duplicate (unless its twin is under
another identity and the face is far from its own: then the label flag), near_identical (only with
``drop_near_identical``), identity_merge_candidate (only with ``merge="reject"``),
unidentifiable (a face whose quality says the recognizer would not verify it, or one that does not
match its identity, far or nearer another one, whose quality says it could not have: not evidence
against its label), far_from_dominant, cross_id_conflict, non_dominant_subcenter (only with
``drop_non_dominant``: the paper keeps such faces within the angle); else ok. Every score behind a
decision stays in the row, so any threshold can be re-applied in SQL later.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.config import ScoreConfig
from curate.reasons import SCORING, with_is_columns
from curate.schema import require

READS = ("image_id", "identity", "spine_reason", "dup_of", "dup_identity", "near_identical_of", "merge_into", "quality",
         "unmatched_copy_of",
         "angle_to_dominant", "own_sim", "other_sim", "is_dominant")


def unidentifiable_below(cfg: ScoreConfig, cal: dict | None) -> tuple[float, float] | None:
    """(any face, a face that does not match its identity): the qualities under which such a face is
    unidentifiable (curate.quality.thresholds), each the user's, else the card's match model's (a
    card from before the first has only the second); None (no such rule) for a model without one,
    whose quality only ranks faces, and under a learned quality head (its norm is another scale)."""
    match = (cal or {}).get("quality", {}).get("match")
    card = (None, None) if match is None or cfg.quality_model else \
        (match.get("unidentifiable_below") if "unmatched_below" in match else 0.0,
         match.get("unmatched_below", match.get("unidentifiable_below")))
    any_ = cfg.unidentifiable_below if cfg.unidentifiable_below is not None else card[0]
    unmatched = cfg.unmatched_below if cfg.unmatched_below is not None else card[1]
    if any_ is None and unmatched is None:
        return None
    return float(any_ or 0.0), float(max(unmatched or 0.0, any_ or 0.0))


def select(t: pa.Table, cfg: ScoreConfig, far_angle: float, unidentifiable: tuple[float, float] | None = None) -> pa.Table:
    """``unidentifiable``: (any face, a face that does not match): the qualities under which such a
    face is unidentifiable (``unidentifiable_below``); None (a model with no match
    model): quality only ranks faces, it rejects none."""
    require(t, READS, "select")

    def col(name):
        return np.asarray(t[name].to_numpy(zero_copy_only=False), dtype=np.float64)

    quality = col("quality")
    any_below, unmatched_below = unidentifiable or (-np.inf, -np.inf)
    far = col("angle_to_dominant") > far_angle
    conflict = col("other_sim") - col("own_sim") > cfg.conflict_margin
    # a near-duplicate of a face filed under another identity, and far from its own: the copy is
    # evidence that this label is wrong, so the label flag is its reason (the twin is judged apart)
    cross_dup = np.asarray(pc.fill_null(pc.not_equal(t["dup_identity"], t["identity"]), False).to_numpy(zero_copy_only=False), bool)
    rules = {
        "duplicate": pc.is_valid(t["dup_of"]).to_numpy(zero_copy_only=False) & ~(cross_dup & (far | conflict)),
        "near_identical": cfg.drop_near_identical & pc.is_valid(t["near_identical_of"]).to_numpy(zero_copy_only=False),
        "identity_merge_candidate": (cfg.merge == "reject") & pc.is_valid(t["merge_into"]).to_numpy(zero_copy_only=False),
        # too poor to tell whose face it is: its quality says the recognizer would not verify it
        # against another photo of the person; and a face that does not match its identity at a
        # quality that says it could not have (AdaFace: a hard low-quality face is no evidence
        # against its label) is unidentifiable too, at the card's higher threshold for those
        "unidentifiable": (quality < any_below) | ((far | conflict) & (quality < unmatched_below))
        | pc.is_valid(t["unmatched_copy_of"]).to_numpy(zero_copy_only=False),
        "far_from_dominant": far,
        "cross_id_conflict": conflict,
        "non_dominant_subcenter": cfg.drop_non_dominant
        & ~np.asarray(t["is_dominant"].fill_null(True).to_numpy(zero_copy_only=False)),
    }
    assert tuple(rules) == SCORING, "every scoring reason of the registry has its rule here, in its order"
    reason = np.array(t["spine_reason"].to_pylist(), dtype=object)
    open_ = reason == "ok"
    for name, hit in rules.items():
        hit = open_ & np.nan_to_num(hit, nan=0).astype(bool)
        reason[hit] = name
        open_ &= ~hit
    # rank within identity by quality, best first (rows without quality rank last)
    codes = pc.dictionary_encode(t["identity"].fill_null("")).combine_chunks().indices.to_numpy()
    order = np.lexsort((-np.nan_to_num(quality, nan=-1.0), codes))
    new_group = np.r_[True, codes[order][1:] != codes[order][:-1]]
    start = np.maximum.accumulate(np.where(new_group, np.arange(len(t)), 0))
    rank = np.empty(len(t), np.int32)
    rank[order] = np.arange(len(t)) - start + 1
    reason = pa.array(reason.tolist(), pa.string())
    out = t.append_column("keep", pa.array(reason.to_numpy(zero_copy_only=False) == "ok")).append_column("reason", reason)
    return with_is_columns(out).append_column("quality_rank", pa.array(rank, pa.int32()))
