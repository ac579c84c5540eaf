"""The curation benchmark: the crawl builder records the truth of every file, the metrics match a
hand-checked truth, and `curate bench` runs end to end on a few identities."""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate import benchmark as B
from curate.schema import encode_embeddings


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Identity folders of real photos with no noise of their own (packaged photos and variants)."""
    from curate.sample import build_sample_crawl

    root = tmp_path_factory.mktemp("bench-src") / "faces"
    build_sample_crawl(str(root), variants=6, noise=False)
    return root


def test_the_crawl_records_the_truth_of_every_file(source, tmp_path):
    noise = B.Noise(flip=0.1, distractor=0.1, duplicate=0.1, group=0.05, unidentifiable=0.1, nonface=0.05, split=1,
                    open_set=0.2)
    truth = B.build_crawl(str(source), str(tmp_path / "crawl"), noise, seed=3)
    files = sorted(str(p.relative_to(tmp_path / "crawl")) for p in (tmp_path / "crawl").rglob("*") if p.is_file())
    assert sorted(truth["source"].to_pylist()) == files  # one truth row per file, nothing else
    rows = truth.to_pylist()
    kinds = {k: sum(r["kind"] == k for r in rows) for k in B.KINDS}
    clean = kinds["clean"] + kinds["split"]
    assert kinds["flip"] >= 1 and kinds["distractor"] >= 1 and kinds["nonface"] >= 1
    assert kinds["duplicate"] == round(0.1 * (clean + kinds["flip"])) or kinds["duplicate"] >= 1
    # a flip is another in-set person's photo; a distractor someone never filed under a label
    labels = {r["label"] for r in rows}
    persons = {r["person"] for r in rows if r["kind"] in ("clean", "split")}
    assert all(r["person"] != r["label"] and r["person"] in persons for r in rows if r["kind"] == "flip")
    assert all(r["person"] not in persons and r["person"] not in labels for r in rows if r["kind"] == "distractor")
    # copies point at a clean file under the same label; the split person has two labels
    by_source = {r["source"]: r for r in rows}
    assert all(by_source[r["original"]]["kind"] in ("clean", "split") and by_source[r["original"]]["label"] == r["label"]
               for r in rows if r["kind"] in ("duplicate", "unidentifiable"))
    assert {r["detail"] for r in rows if r["kind"] == "duplicate"} <= set(B.COPY_KINDS)  # one kind of copy each
    # a group photo holds the person's own photo, its box inside the composite
    from PIL import Image

    groups = [r for r in rows if r["kind"] == "group"]
    assert groups and all(r["label"] == r["person"] for r in groups)
    for r in groups:
        x1, y1, x2, y2 = (int(v) for v in r["detail"].split(","))
        w, h = Image.open(tmp_path / "crawl" / r["source"]).size
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and (x2 - x1) < w  # beside someone else
    split = [r for r in rows if r["kind"] == "split"]
    assert split and all(r["label"] == r["person"] + "~2" for r in split)
    # every photo of the source used once at most: a flip is never also a clean file
    originals = [Path(r["source"]).name.split("_", 2)[-1] if r["kind"] == "flip" else Path(r["source"]).name
                 for r in rows if r["kind"] in ("clean", "split", "flip")]
    assert len([r for r in rows if r["kind"] in ("clean", "split", "flip")]) == len(
        {(r["person"], o) for r, o in zip([r for r in rows if r["kind"] in ("clean", "split", "flip")], originals)})
    with pytest.raises(Exception, match="exists"):
        B.build_crawl(str(source), str(tmp_path / "crawl"), noise, seed=3)


def hand_checked():
    """Ten files whose outcome is written out by hand, and the table `joined` would give."""
    rows = [  # source, kind, person, label, original, spine, reason, keep, dup_of
        ("a/1.jpg", "clean", "a", "a", None, "ok", "ok", True, None),
        ("a/2.jpg", "clean", "a", "a", None, "ok", "far_from_dominant", False, None),  # a clean face lost
        ("a/flip.jpg", "flip", "b", "a", None, "ok", "far_from_dominant", False, None),  # caught
        ("a/other.jpg", "distractor", "z", "a", None, "ok", "ok", True, None),  # missed, and kept
        ("b/1.jpg", "clean", "b", "b", None, "ok", "ok", True, None),
        ("b/copy.jpg", "duplicate", "b", "b", "b/1.jpg", "ok", "duplicate", False, "b/1.jpg"),  # pair caught
        ("b/bad.jpg", "unidentifiable", "b", "b", "b/1.jpg", "no_face", "no_face", False, None),  # not scored
        ("b/nf.jpg", "nonface", None, "b", None, "no_face", "no_face", False, None),
        ("b~2/1.jpg", "split", "b", "b~2", None, "ok", "identity_merge_candidate", False, None),
        ("c/1.jpg", "clean", "c", "c", None, "decode_error", "decode_error", False, None),  # not detected
    ]
    ids = {r[0]: f"id{i}" for i, r in enumerate(rows)}
    t = pa.table({
        "image_id": [ids[r[0]] for r in rows], "source": [r[0] for r in rows], "sha1": [f"{i}" for i in range(len(rows))],
        "spine_reason": [r[5] for r in rows], "reason": [r[6] for r in rows], "keep": [r[7] for r in rows],
        "dup_of": [ids.get(r[8]) for r in rows], "truth_label": [r[3] for r in rows], "truth_person": [r[2] for r in rows],
        "truth_kind": [r[1] for r in rows], "truth_original": [r[4] for r in rows],
        "truth_detail": ["b~2" if r[1] == "split" else "crop" if r[1] == "duplicate" else None for r in rows],
        # each face on its person's axis (the distractor z on its own): every face verifies its person's others
        "embedding": encode_embeddings(np.eye(8)[[{"a": 0, "b": 1, "c": 2, "z": 3}.get(r[2], 4) for r in rows]]),
    })
    identities = pa.table({"identity": ["a", "b", "b~2", "c"], "merge_into": [None, None, "b", None]})
    return t, identities


def test_metrics_match_a_hand_checked_truth():
    t, identities = hand_checked()
    m = B.evaluate(t, identities)
    # kept: a/1, a/other (a distractor), b/1 -> purity 2/3; clean: a/1 a/2 b/1 b~2/1 c/1 -> 2 kept of 5
    assert m["purity"] == pytest.approx(2 / 3, abs=1e-4) and m["label_purity"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["clean_retention"] == pytest.approx(2 / 5) and m["clean_retention_detected"] == pytest.approx(2 / 4)
    assert m["clean_rejected_by_scoring"] == {"far_from_dominant": 1, "identity_merge_candidate": 1}
    # label flags: a/2 and a/flip flagged; truth a/flip and a/other -> precision 1/2, recall 1/2
    assert (m["label_noise"]["precision"], m["label_noise"]["recall"]) == (0.5, 0.5)
    assert m["label_noise_rejected_overall"] == 0.5
    assert m["duplicates"] == {"pairs": 1, "pairs_caught": 1, "recall": 1.0, "flagged": 1, "precision": 1.0,
                               "per_kind": {"crop": {"pairs": 1, "caught": 1, "recall": 1.0}}}
    # distinct clean photos of one person: a/1-a/2 and b/1-b~2/1 (one person under two labels); none called a copy
    assert m["distinct_pairs_called_duplicate"] == {"web": {"pairs": 2, "called": 0, "share": 0.0},
                                                    "lab": {"pairs": 0, "called": 0, "share": None}}
    assert m["merges"] == {"split_people": 1, "found": 1, "recall": 1.0, "links": 1, "precision": 1.0}
    assert m["unidentifiable"]["true"] == 0 and m["unidentifiable_rejected_overall"] == 1.0
    assert m["clean_unverified"] == 0 and m["clean_rejected_unidentifiable"] == 0.0
    assert m["nonface_rejected"] == 1.0
    assert m["per_kind"]["clean"] == {"files": 4, "ok": 2, "far_from_dominant": 1, "decode_error": 1}


def test_a_face_the_recognizer_cannot_verify_is_found_by_its_own_person():
    """Person a: three photos on one axis, one lit from the side (its own axis); a degraded copy of
    a's first photo counts no mate in that photo. Person b: three photos. Only the side-lit face
    verifies fewer than half of its person's other photos; the copy verifies the two it may."""
    rng = np.random.default_rng(0)
    a, b, side = np.eye(16)[0], np.eye(16)[1], np.eye(16)[2]
    emb = np.stack([a, a, a, side - 0.3 * a, a, b, b, b]) + 0.05 * rng.normal(size=(8, 16))
    t = pa.table({"spine_reason": ["ok"] * 8, "truth_person": ["a"] * 5 + ["b"] * 3,
                  "truth_kind": ["clean"] * 4 + ["unidentifiable"] + ["clean"] * 3,
                  "source": ["a/1", "a/2", "a/3", "a/side", "a/bad", "b/1", "b/2", "b/3"],
                  "truth_original": [None] * 4 + ["a/1"] + [None] * 3,
                  "embedding": encode_embeddings(emb)})
    assert B.unverified(t).tolist() == [False, False, False, True, False, False, False, False]


def test_error_versus_discard_drops_the_lowest_quality_first():
    """Two people; person b's low-quality face looks like a: discarding it first removes the only
    genuine pair that fails, so FNMR falls to 0 for a signal that ranks it lowest."""
    rng = np.random.default_rng(0)
    a, b = np.eye(8)[0], np.eye(8)[1]
    emb = np.stack([a + 0.01 * rng.normal(size=8) for _ in range(4)] + [b + 0.01 * rng.normal(size=8) for _ in range(3)]
                   + [a + 0.3 * b])  # b's bad face: nearer a than b
    good, bad = [90.0] * 7 + [1.0], [1.0] * 7 + [90.0]
    t = pa.table({"spine_reason": ["ok"] * 8, "truth_person": ["a"] * 4 + ["b"] * 4,
                  "embedding": encode_embeddings(emb / np.linalg.norm(emb, axis=1, keepdims=True)),
                  "good": pa.array(good, pa.float32()), "bad": pa.array(bad, pa.float32())})
    curve = B.edc(t, fmr=0.01, signals=("good", "bad"), discard=(0.0, 0.125))
    fnmr = {(r["signal"], r["discard"]): r["fnmr"] for r in curve.to_pylist()}
    assert fnmr[("good", 0.0)] == fnmr[("bad", 0.0)] > 0  # the same pairs before any discard
    assert fnmr[("good", 0.125)] == 0.0 and fnmr[("bad", 0.125)] > 0


@pytest.mark.slow
def test_curate_bench_end_to_end_on_a_few_identities(source, tmp_path):
    out = tmp_path / "bench"
    r = CliRunner().invoke(__import__("curate.cli", fromlist=["main"]).main, [
        "bench", "--faces", str(source), "--out", str(out), "--seeds", "0", "--holdout", "1", "--no-progress",
        "--flip", "0.1", "--duplicate", "0.1", "--unidentifiable", "0.1", "--split", "1", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output[r.output.index("{"):])
    assert s["tuning_seeds"] == [0] and s["held_out_seed"] == 1
    for seed in (0, 1):
        run = out / f"seed-{seed}" / "run"
        m = json.load(open(run / "bench" / "metrics.json"))
        truth = pq.read_table(run / "truth.parquet")
        assert sum(k["files"] for k in m["per_kind"].values()) == m["files"] == len(truth)  # every file accounted for
        assert 0 <= m["purity"] <= 1 and 0 <= m["clean_retention"] <= 1
        # the EDC pairs each row's quality with the embedding of the face the scoring judged (a
        # group photo's chosen face, not the spine's first): joined carries the curated rows' own
        from curate.io.shards import ShardStore

        store = ShardStore.of(str(run))
        curated = pa.concat_tables([pq.read_table(f, columns=["image_id", "embedding"])
                                    for f in store.view_files(store.current_scoring())["curated"]])
        t = B.joined(str(run), truth)
        assert dict(zip(t["image_id"].to_pylist(), t["embedding"].to_pylist())) == \
            dict(zip(curated["image_id"].to_pylist(), curated["embedding"].to_pylist()))
        edc = pq.read_table(run / "bench" / "edc.parquet")
        assert set(edc["signal"].to_pylist()) == set(B.EDC_SIGNALS)
        sweep = pq.read_table(run / "bench" / "sweep.parquet")
        assert set(sweep["threshold"].to_pylist()) == set(B.SWEEPS)
        assert "Benchmark: this run against its truth" in open(m["report"] if "report" in m else
                                                                s["runs"][str(seed)]["report"]).read()
    held = {r["metric"]: r["held_out"] for r in s["table"]}
    assert held["purity"] is not None
    assert os.path.exists(out / "bench.json") and os.path.exists(out / "bench.parquet")


def test_cleanlab_baseline_is_scored_on_the_same_faces():
    """Three well-separated people of 10 faces, two faces filed under the wrong one: confident
    learning finds them, and our flags are counted over exactly the faces cleanlab saw."""
    pytest.importorskip("cleanlab")
    rng = np.random.default_rng(0)
    centers = np.eye(16)[:3]
    person = np.repeat(["a", "b", "c"], 10)
    emb = np.stack([centers["abc".index(p)] + 0.05 * rng.normal(size=16) for p in person])
    label = person.copy()
    label[[0, 10]] = ["b", "c"]  # two flips
    reason = np.where(np.isin(np.arange(30), [0, 5]), "far_from_dominant", "ok")  # one caught, one clean face lost
    t = pa.table({"spine_reason": ["ok"] * 29 + ["no_face"], "truth_label": label.tolist(),
                  "truth_kind": ["flip" if i in (0, 10) else "clean" for i in range(30)],
                  "embedding": encode_embeddings(emb), "reason": reason.tolist()})
    m = B.cleanlab_baseline(t)
    assert m["faces"] == 29
    assert m["cleanlab"]["true"] == 2 and m["cleanlab"]["recall"] == 1.0
    assert m["ours_same_faces"] == {"flagged": 2, "true": 2, "hits": 1, "precision": 0.5, "recall": 0.5}


def test_noise_rate_per_identity_has_a_wilson_interval():
    from curate.curation import _noise_rates

    identities = pa.table({"identity": ["a", "b"], "faces": [4, 10]})
    scores = pa.table({"identity": ["a"] * 4 + ["b"] * 10,
                       "reason": ["ok", "ok", "duplicate", "ok"] + ["far_from_dominant", "cross_id_conflict"] + ["ok"] * 8})
    r = _noise_rates(identities, scores).to_pylist()
    assert [x["label_flags"] for x in r] == [0, 2]  # a near-duplicate is not label noise
    assert r[0]["noise_rate"] == 0 and r[0]["noise_rate_lo"] == 0
    assert r[0]["noise_rate_hi"] == pytest.approx(1.96**2 / (4 + 1.96**2), abs=1e-4)  # 4 clean faces: up to 49%
    assert r[1]["noise_rate"] == pytest.approx(0.2)
    assert (r[1]["noise_rate_lo"], r[1]["noise_rate_hi"]) == (pytest.approx(0.0567, abs=1e-3), pytest.approx(0.5098, abs=1e-3))


def test_group_photos_are_scored_by_the_face_the_row_carries():
    """A kept group photo with the person's face is right; one carrying someone else's face is label
    noise (its flag is a hit); one left ambiguous chose nothing."""
    t = pa.table({"truth_kind": ["group"] * 3, "spine_reason": ["ok", "ok", "multi_face_ambiguous"],
                  "reason": ["ok", "far_from_dominant", "multi_face_ambiguous"], "keep": [True, False, False],
                  "bbox": [[10.0, 10, 50, 60], [210.0, 10, 260, 60], [10.0, 10, 50, 60]],
                  "truth_detail": ["0,0,200,300"] * 3})
    assert B.group_picks(t) == {"photos": 3, "chosen": 2, "chosen_share": 0.6667, "kept": 1, "kept_right": 1,
                                "right_share": 1.0, "chosen_right": 1}
    assert B.wrong_face(t).tolist() == [False, True, False]


def test_quick_settings_say_what_is_wrong(source, tmp_path):
    """--max-photos below --min-photos names both options; one seed has no spread (n/a); a kind
    asked for that no crawl got is a warning; the table ends with the runs, not a JSON dump."""
    from click.testing import CliRunner

    from curate.cli import main
    from flows.bench_flow import aggregate, empty_kinds, print_table

    r = CliRunner().invoke(main, ["bench", "--faces", str(source), "--out", str(tmp_path / "b"), "--max-photos", "3"])
    assert r.exit_code != 0 and "--min-photos" in r.output and "--max-photos 3" in r.output, r.output
    agg = aggregate({0: {"purity": 0.99}}, None)
    assert {r["metric"]: r["std"] for r in agg["table"]}["purity"] is None
    (tmp_path / "b" / "seed-0").mkdir(parents=True)
    pq.write_table(pa.table({"kind": ["clean", "flip"]}), tmp_path / "b" / "seed-0" / "crawl.truth.parquet")
    warnings = empty_kinds(str(tmp_path / "b"), {"flip": 0.05, "split": 2, "group": 0.0})
    assert len(warnings) == 1 and warnings[0].startswith("--split asks for 2")
    text = print_table({**agg, "runs": {"0": {"run": "R", "report": "P"}}, "warnings": warnings})
    assert "n/a" in text and "seed 0     R  (report P)" in text and "WARNING" in text and "{" not in text
