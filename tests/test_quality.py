"""Quality as recognition (issue 28): the chance of matching, fitted on a reference, monotone in
every signal it uses, signals chosen by what they do for matching on people held out; and
`curate calibrate` end to end on real faces."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA

from curate import quality
from curate.stats import unit


def reference(n_ids=30, per=12, d=32, seed=0):
    """Faces of n_ids people; a third of them degraded: low sharpness, embedding drifted away from
    their person in proportion to how degraded. Noise: a signal with no bearing on matching."""
    rng = np.random.default_rng(seed)
    centers = unit(rng.normal(size=(n_ids, d)))
    person = np.repeat(np.arange(n_ids), per)
    damage = np.where(rng.random(len(person)) < 0.33, rng.uniform(0, 1, len(person)), 0.0)
    emb = unit(centers[person] * (1 - damage[:, None]) + rng.normal(scale=0.12 + 0.6 * damage[:, None], size=(len(person), d)))
    values = {"sharpness": 300 * np.exp(-4 * damage) * rng.uniform(0.8, 1.2, len(person)),
              "contrast": rng.uniform(20, 60, len(person))}
    tmpl = unit(np.stack([emb[person == k].sum(0) for k in range(n_ids)]))
    matched = np.einsum("nd,nd->n", emb, tmpl[person]) > 0.5
    return values, matched, emb, person


def test_fit_picks_the_signal_that_predicts_matching_and_is_monotone():
    values, matched, emb, person = reference()
    m = quality.fit(values, matched, emb, person)
    assert m["signals"][0] == "sharpness"
    assert "contrast" not in m["signals"]  # noise: it lowers no held-out error
    assert m["edc"] < m["edc_curves"]["quality"][0]  # discarding by quality lowers the error on people held out
    sharp = np.linspace(1, 400, 50)
    p = quality.probability(m, {"sharpness": sharp, "contrast": np.full(50, 40.0)})
    assert np.all(np.diff(p) >= 0) and p[0] < 0.5 < p[-1]
    # a missing signal counts as the reference's average, not as zero
    assert np.isfinite(quality.probability(m, {"sharpness": np.array([np.nan])})).all()
    assert m["edc_curves"]["discard"][0] == 0.0 and len(m["edc_curves"]["quality"]) == len(m["edc_curves"]["discard"])


def test_a_signal_of_the_wrong_sign_is_never_used():
    """Quality never falls as a face gets sharper: a signal whose fitted weight says otherwise is
    dropped, however much it would lower the error on the reference."""
    values, matched, emb, person = reference(seed=1)
    values = {"sharpness": 1000.0 / values["sharpness"]}  # 'sharper' now means worse: the wrong sign
    m = quality.fit(values, matched, emb, person)
    assert m["edc_alone"]["sharpness"] is None
    assert m["steps"] == []


def test_signals_are_chosen_by_what_they_do_on_a_crawl_not_on_the_references_mix():
    """A reference holds a degraded copy for every few photos, a crawl about 1 in 30. A signal that
    only finds the copies (sharpness here) wins an EDC over the reference's own mix; the one that
    ranks the photos' natural spread (yaw) wins over crawl-like sets (quality.crawl_like), where the
    card's quality is used."""
    rng = np.random.default_rng(3)
    n_ids, per, d = 40, 12, 32
    person = np.repeat(np.arange(n_ids), per)
    hard = rng.uniform(0, 1, len(person)) ** 3  # a few photos turned far away
    centers = unit(rng.normal(size=(n_ids, d)))
    emb = unit(centers[person] * (1 - 0.8 * hard[:, None]) + rng.normal(scale=0.15 + 0.5 * hard[:, None], size=(len(person), d)))
    of = np.arange(0, len(person), 2)  # a degraded copy of every other photo, its face drifted away
    damage = rng.uniform(0.5, 1.0, len(of))
    copies = unit(emb[of] * (1 - damage[:, None]) + rng.normal(scale=0.6 * damage[:, None], size=(len(of), d)))
    emb, who = np.r_[emb, copies], np.r_[person, person[of]]
    clean = np.r_[np.ones(len(person), bool), np.zeros(len(of), bool)]
    values = {"yaw": 60 * np.r_[hard, hard[of]] + rng.uniform(0, 3, len(emb)),
              "sharpness": np.r_[rng.uniform(150, 300, len(person)), 300 * np.exp(-4 * damage)]}
    tmpl = unit(np.stack([emb[clean & (who == k)].sum(0) for k in range(n_ids)]))
    matched = np.einsum("nd,nd->n", emb, tmpl[who]) > 0.5
    sets = quality.crawl_like(clean, np.random.default_rng(0))
    assert len(sets) == 3 and all(abs((~clean[s]).mean() - 1 / quality.ANY_PRIOR) < 0.005 for s in sets)
    assert quality.fit(values, matched, emb, who)["signals"][0] == "sharpness"
    assert quality.fit(values, matched, emb, who, clean=clean)["signals"][0] == "yaw"


def test_thresholds_call_a_poor_face_unidentifiable_only_at_the_stated_odds():
    """Any face under the first threshold, a face that does not match under the second: each the
    highest quality at which the reference's failing faces outnumber its passing ones by the odds
    the priors ask for; the second never below the first."""
    rng = np.random.default_rng(0)
    p = np.r_[rng.beta(20, 1, 2000), rng.beta(2, 3, 300)]  # well-seen faces near 1, failures spread low
    rate = np.r_[np.full(2000, 0.9), np.full(300, 0.1)]
    clean = np.r_[np.ones(2000, bool), np.zeros(300, bool)]
    th = quality.thresholds(p, rate, clean)
    for name, odds in (("unidentifiable_below", 3 * quality.ANY_PRIOR), ("unmatched_below", 3 * quality.PRIOR)):
        below = th[name]
        assert 0 < below < 100
        share_pass = max(np.mean(100 * p[:2000] < below), 1 / 2000)
        assert np.mean(100 * p[2000:] < below) >= odds * share_pass
    assert th["unmatched_below"] > th["unidentifiable_below"]
    assert th["reference_below"]["clean"] <= 1 / (3 * quality.ANY_PRIOR) and th["reference_below"]["copies"] > 0.1
    assert "90 times" in th["why"] and "30 times" in th["why"]
    assert quality.threshold(p[:2000], p[:0], 30.0) == 0.0  # nothing fails: nothing is unidentifiable


FACES = SHARED_DATA / "faces"
PEOPLE = ("lfw__Tony_Blair", "lfw__Hugo_Chavez", "lfw__Colin_Powell", "lfw__Jacques_Chirac", "orl__s24", "orl__s28")


@pytest.mark.skipif(not all((FACES / p).is_dir() for p in PEOPLE), reason="no ../shared/data/faces")
def test_calibrate_writes_a_match_model_on_real_faces(tmp_path):
    """`curate calibrate` on 6 real people: the spine over the photos, re-saved and degraded copies,
    the match model in the card, its figures printed."""
    from curate.cli import main

    ref = tmp_path / "ref"
    for p in PEOPLE:
        (ref / p).mkdir(parents=True)
        for f in sorted((FACES / p).iterdir())[:8]:
            (ref / p / f.name).write_bytes(f.read_bytes())
    card = tmp_path / "card.json"
    r = CliRunner().invoke(main, ["calibrate", "--recognizer", "edgeface_s", "--reference", str(ref), "--out", str(card),
                                  "--duplicates", "10", "--degraded", "10"])
    assert r.exit_code == 0, r.output
    assert "the chance of matching" in r.output and "unidentifiable below quality" in r.output
    cal = json.loads(card.read_text())["calibrations"]["yunet"]
    m = cal["quality"]["match"]
    assert m["signals"] and set(m["signals"]) <= set(quality.FEATURES)
    assert 0 <= m["unidentifiable_below"] <= 100 and m["why"]
    assert cal["quality"]["face_found"]  # every degradation was tried
    # the recognizer's own card, as this process holds it, is untouched: later runs still get it
    from curate.config import RunConfig
    from curate.pipeline import load_models

    held = load_models(RunConfig()).recognizer.card["calibrations"]["yunet"]
    assert held["reference"]["set"] != cal["reference"]["set"] and held["reference"]["identities"] > 100


def test_match_rates_count_the_person_s_other_photos_a_face_is_verified_against():
    """A clean face against its person's other photos; a copy against all of them but its original."""
    from curate.calibration import match_rates

    emb = unit(np.array([[1, 0, 0], [0.9, 0.1, 0], [0.2, 1, 0], [0, 0, 1], [0, 0.1, 1]], float))
    codes = np.array([0, 0, 0, 1, 1])
    bad = unit(np.array([[1, 0.05, 0], [0, 1, 0]], float))  # a copy of face 0 still near it; a copy of face 3 lost
    rate = match_rates(emb, codes, bad, np.array([0, 3]), cos=0.8)
    assert rate.tolist() == [0.5, 0.5, 0.0, 1.0, 1.0, 0.5, 0.0]  # the first copy: face 1 of faces 1, 2 (its original not counted)
    lone = match_rates(emb[:1], codes[:1], bad[:1], np.array([0]), cos=0.8)
    assert np.isnan(lone).all()  # no other photo of the person: no rate


def test_fine_detail_falls_with_blur_and_upscaling_not_with_contrast():
    """The detail cue: energy at 8-20 cycles across the crop over 1-8. A face-like pattern blurred or
    brought down to a thumbnail and back has less; the same pattern at half the contrast, as much."""
    import cv2

    from curate.pipeline import pixel_cues

    rng = np.random.default_rng(0)
    x = cv2.resize(rng.uniform(0, 255, (28, 28)), (112, 112), interpolation=cv2.INTER_CUBIC)  # detail at ~14 cycles
    x = np.clip(x + cv2.GaussianBlur(rng.uniform(-60, 60, (112, 112)), (0, 0), 6), 0, 255)  # and coarse shading

    def detail(gray):
        return pixel_cues(np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, 2).tobytes(), 112)[3]

    sharp = detail(x)
    assert detail(cv2.GaussianBlur(x, (0, 0), 2.5)) < 0.2 * sharp
    assert detail(cv2.resize(cv2.resize(x, (12, 12), interpolation=cv2.INTER_AREA), (112, 112))) < 0.2 * sharp
    assert abs(detail(128 + 0.5 * (x - 128)) / sharp - 1) < 0.05
