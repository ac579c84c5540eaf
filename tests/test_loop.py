"""Closing the loop: verification on held-out people, the projection's K=3->1 recipe, and
`curate loop` end to end (round 0, the before/after training, round 1 with the chained model)."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from curate.cli import main  # noqa: E402
from curate.loop import held_out_people, verification  # noqa: E402
from models import projection  # noqa: E402


def people(n_ids=6, per=30, dim=32, flip=0.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_ids, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    truth = np.repeat(np.arange(n_ids), per)
    x = centers[truth] + 0.35 * rng.normal(size=(len(truth), dim)) / np.sqrt(dim)
    labels = truth.copy()
    flipped = rng.random(len(truth)) < flip
    labels[flipped] = (truth[flipped] + rng.integers(1, n_ids, flipped.sum())) % n_ids
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth, labels, flipped


def test_verification_counts_every_pair_and_separates_clean_people():
    x, truth, _, _ = people(n_ids=3, per=5)
    v = verification(x, truth.astype(str))
    assert v["genuine_pairs"] == 3 * 10 and v["impostor_pairs"] == 105 - 30
    assert v["accuracy"] == 1.0 and v["tar_at_far"]["0.001"] == 1.0
    held = held_out_people([f"p{i}" for i in range(10)], 0.2, seed=1)
    assert len(held) == 2 and held == held_out_people([f"p{i}" for i in range(10)], 0.2, seed=1)


def test_projection_k3_to_1_drops_the_flipped_faces():
    x, truth, labels, flipped = people(flip=0.2)
    proj, kept = projection.train(x, labels.astype(str), head="subcenter", head_kwargs={"k": 3}, epochs=20,
                                  drop_at=10, seed=0)
    dropped = ~kept
    precision = (dropped & flipped).sum() / max(dropped.sum(), 1)
    recall = (dropped & flipped).sum() / flipped.sum()
    assert precision > 0.8 and recall > 0.8, (precision, recall)
    assert projection.apply(proj, x).shape == x.shape


@pytest.mark.slow
def test_curate_loop_end_to_end(sample_crawl, tmp_path):
    out = tmp_path / "loop"
    r = CliRunner().invoke(main, ["loop", str(sample_crawl), "--out", str(out), "--epochs", "3", "--holdout", "0.3",
                                  "--no-progress", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output[r.output.index("{"):])
    assert [os.path.basename(x["run"]) for x in s["rounds"]] == ["round-0", "round-1"]
    assert s["rounds"][1]["model"].startswith("projection@") and s["rounds"][0]["images"] == s["rounds"][1]["images"]
    v = s["verification"]
    for k in ("base", "noisy", "curated"):
        assert 0 <= v[k]["accuracy"] <= 1 and v[k]["genuine_pairs"] > 0
    assert v["train_faces"]["noisy"] >= v["train_faces"]["curated"] > 0
    card = json.load(open(out / "model" / "projection.card.json"))
    assert card["base"] == "edgeface_s" and card["calibrations"]
    assert json.load(open(out / "loop.json")) == s
    assert "The loop: rounds side by side" in open(s["report"]).read()  # the loop writes its report
    # a sample crawl holds out a handful of people: the figures say how little they rest on
    assert any("impostor pairs" in w for w in s["warnings"])
