"""Per-model calibration: distributions and thresholds from a labelled reference set, quality as a
reference percentile (the same face gets the same quality in any run), angles that do not depend
on identity size, and warnings where the crawl disagrees with the card."""

import numpy as np
import pyarrow as pa
import pytest
from test_score import make

from curate.config import ScoreConfig
from curate.scoring import score_table
from curate.stats import at, calibrate, cdf, combined_quality, loo_angles


def clusters(n_ids=30, per=20, spread=0.085, d=64, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_ids, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    codes = np.repeat(np.arange(n_ids), per)
    emb = centers[codes] + rng.normal(scale=spread, size=(len(codes), d))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, rng.uniform(20, 30, len(codes)), [f"id{c}" for c in codes]


def test_stored_distributions_invert():
    x = np.random.default_rng(0).normal(50, 10, 100_000)
    from curate.stats import GRID, _q

    dist = _q(x)
    assert len(dist) == len(GRID)
    assert at(dist, 0.5) == pytest.approx(50, abs=0.3)
    assert cdf(dist, at(dist, 0.01)) == pytest.approx(0.01, abs=1e-6)
    assert cdf(dist, -1e9) == 0 and cdf(dist, 1e9) == 1


def test_leave_one_out_angles_do_not_shrink_with_identity_size():
    """With the face in its own template, a 2-face identity's faces look twice as close as they
    are; left out, small and large identities give the same angles."""
    emb, norms, _ = clusters(n_ids=40, per=40)
    codes = np.repeat(np.arange(40), 40)
    keep = (codes < 20) | (np.arange(len(codes)) % 40 < 3)  # 20 identities of 40 faces, 20 of 3
    e, c, w = emb[keep], np.unique(codes[keep], return_inverse=True)[1], norms[keep]
    loo = loo_angles(e, c, w, c.max() + 1)
    small = np.bincount(c)[c] == 3
    tmpl = np.zeros((c.max() + 1, e.shape[1]))
    np.add.at(tmpl, c, e * w[:, None])
    own = np.degrees(np.arccos(np.clip(np.einsum("nd,nd->n", e, tmpl[c] / np.linalg.norm(tmpl[c], axis=1, keepdims=True)), -1, 1)))
    assert np.median(own[~small]) - np.median(own[small]) > 5  # with itself in: small identities look tight
    assert np.median(loo[small]) >= np.median(loo[~small])  # left out: they do not (only the template's noise remains)


def test_calibration_thresholds_separate_genuine_from_impostor():
    emb, norms, labels = clusters()
    cal = calibrate(emb, norms, labels)
    th = cal["thresholds"]
    gen, imp = cal["angle_to_center"]["genuine"], cal["angle_to_center"]["impostor"]
    assert at(gen, 0.99) <= th["far_angle"] <= at(imp, 0.01) + 1e-6
    assert th["far_angle_floor"] <= th["far_angle"] <= max(th["far_angle_ceiling"], th["far_angle_floor"])
    assert at(cal["center_cos"]["different"], 0.9995) < th["merge_cos"] < at(cal["center_cos"]["same_person"], 0.01)
    assert cal["verification"]["tar_at_far_0.001"] > 0.9
    assert len(cal["norm"]["quantiles"]) == 101


def test_quality_is_the_same_for_the_same_face_in_any_run():
    """Quality is a percentile of the card's reference norms: a face's quality does not depend on
    which other faces are in the crawl (issue: 'quality 0 in a 14-image run, kept in a 40-image')."""
    t, _ = make(n_ids=12, per=20, noisy_ids=0, dups=0, merged=0, low=0)
    emb, norms, labels = clusters()
    cal = calibrate(emb, norms, labels, cues={"sharpness": np.full(len(norms), 300.0), "det_score": np.full(len(norms), 0.9)})
    full, _, _ = score_table(t, ScoreConfig(), cal)
    few = t.slice(0, 14)
    part, _, _ = score_table(few, ScoreConfig(), cal)
    np.testing.assert_allclose(np.asarray(part["quality"]), np.asarray(full["quality"])[:14], atol=1e-4)
    # without a card, quality is the run's own percentile, and the run says so
    own, _, calib = score_table(few, ScoreConfig(), None)
    assert not np.allclose(np.asarray(own["quality"]), np.asarray(full["quality"])[:14])
    assert calib["quality_reference"] == "run" and calib["warnings"]


def test_combined_quality_is_the_geometric_mean_of_reference_percentiles():
    cal = {"norm": {"grid": [0, 1], "quantiles": [0.0, 10.0]},
           "cues": {"det_score": {"grid": [0, 1], "quantiles": [0.0, 1.0]}},
           "quality": {"signals": ["norm", "det_score"]}}
    q = combined_quality({"norm": np.array([5.0, 10.0]), "det_score": np.array([1.0, np.nan])}, cal)
    np.testing.assert_allclose(q, [np.sqrt(50.0 * 100.0), 100.0])  # a missing signal is left out of that face's mean


def test_thresholds_come_from_the_card_and_disagreement_is_loud():
    t, _ = make(n_ids=12, per=20, noisy_ids=0, dups=0, merged=0, low=0)
    emb, norms, labels = clusters()
    cal = calibrate(emb, norms, labels)
    s, _, calib = score_table(t, ScoreConfig(), cal)
    assert calib["far_angle"] == cal["thresholds"]["far_angle"]
    assert calib["threshold_source"] == {"far_angle": "card", "dup_cos": "card", "merge_cos": "card"}
    user, _, calib2 = score_table(t, ScoreConfig(far_angle=50.0), cal)
    assert calib2["far_angle"] == 50.0 and calib2["threshold_source"]["far_angle"] == "config"
    # a card from a model with another geometry: the crawl's impostor angles disagree, and it says so
    squeezed = {**cal, "angle_to_center": {**cal["angle_to_center"],
                                           "impostor": [a * 0.4 for a in cal["angle_to_center"]["impostor"]]}}
    _, _, calib3 = score_table(t, ScoreConfig(), squeezed)
    assert any("disagree" in w for w in calib3["warnings"])
    # a flag that rejects many faces is reported
    _, _, calib4 = score_table(t, ScoreConfig(far_angle=5.0), cal)
    assert any(w.startswith("far_from_dominant rejects") for w in calib4["warnings"])


def test_one_identity_has_no_run_fallback_surprises():
    """One identity, no card: no impostor to measure; nothing is a near-duplicate of a different
    photo by a made-up threshold, and the missing calibration is reported."""
    t, _ = make(n_ids=1, per=6, noisy_ids=0, dups=0, merged=0, low=0)
    s, _, calib = score_table(t, ScoreConfig(), None)
    assert s["reason"].to_pylist().count("near_duplicate") == 0
    assert calib["threshold_source"]["far_angle"] == "fallback" and calib["warnings"]
    assert pa.compute.all(s["keep"]).as_py()


def test_a_small_reference_says_what_each_figure_rests_on():
    """12 identities of 20 faces: every figure is computed, and each one its pairs cannot support
    (TAR at 1e-4 from ~28,000 impostor pairs, the merge threshold from 66 pairs of identities) is
    named in a warning with the number it needs."""
    emb, norms, labels = clusters(n_ids=12, per=20)
    cal = calibrate(emb, norms, labels)
    assert cal["support"]["tar_at_far_0.0001"]["needed"] == 100_000
    assert any(w.startswith("tar_at_far_0.0001 rests on") for w in cal["warnings"])
    assert any(w.startswith("merge_cos rests on 66 pairs of identities") for w in cal["warnings"])
    assert "collapsed" not in cal


def test_a_collapsed_model_is_never_used():
    """Every face nearly the same vector (a collapsed training): the calibration says so, and a card
    holding it gives no calibration to a run, with a warning, instead of thresholds that reject all."""
    from models.cards import pick_calibration

    rng = np.random.default_rng(0)
    emb = np.ones((240, 64)) + rng.normal(scale=0.01, size=(240, 64))
    cal = calibrate(emb, np.full(240, 20.0), [f"id{i % 12}" for i in range(240)])
    assert cal["collapsed"] and "collapsed" in cal["warnings"][0]
    got, warning = pick_calibration({"calibrations": {"yunet": cal}}, "yunet")
    assert got is None and "collapsed" in warning


def test_rates_are_shown_with_the_precision_their_counts_support():
    from curate.stats import shown

    assert shown(0.912345, 90) == "0.91"  # 90 pairs: two decimals at most
    assert shown(0.912345, 200_000) == "0.9123"
    assert shown(float("nan"), 10) == "n/a"
