"""The quality head: trained with the MagFace loss on frozen features, its output norm ranks clean
faces above ambiguous ones; exported to ONNX it gives the same norms; `--quality-model` makes it
the quality signal of a scoring run."""

import json

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")

from curate.config import ScoreConfig  # noqa: E402
from curate.schema import encode_embeddings  # noqa: E402
from curate.scoring import score_table  # noqa: E402
from models import quality_head  # noqa: E402


def features(n_ids=10, per=200, dim=32, seed=0):
    """Raw features: clean faces near their identity's direction; 30% ambiguous ones halfway to
    another identity (a face too poor to tell apart), at the same norms, so the raw norm cannot
    tell them apart and only what the loss learned about them can."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_ids, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_ids), per)
    bad = rng.random(len(labels)) < 0.3
    other = (labels + rng.integers(1, n_ids, len(labels))) % n_ids
    base = np.where(bad[:, None], 0.5 * (centers[labels] + centers[other]), centers[labels])
    x = base + 0.15 * rng.normal(size=(len(labels), dim)) / np.sqrt(dim)
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(20, 30, (len(labels), 1))
    return x.astype(np.float32), labels, bad


def auc(clean, bad):
    return float(np.mean(clean[:, None] > bad[None, :]))


def test_the_learned_norm_ranks_corrupted_faces_low_and_exports(tmp_path):
    x, y, bad = features()
    head = quality_head.train(x, y, epochs=10, seed=0, hidden=64)
    q = quality_head.norms(head, x)
    # MagFace's magnitude: lower where the class is ambiguous. Weakly so on frozen features (a head
    # this size fits many hard faces), but clearly above chance, where the raw norm is at chance.
    assert auc(q[~bad], q[bad]) > 0.56
    assert abs(auc(np.linalg.norm(x[~bad], axis=1), np.linalg.norm(x[bad], axis=1)) - 0.5) < 0.04
    path = str(tmp_path / "head.onnx")
    quality_head.export(head, path, x.shape[1])
    np.testing.assert_allclose(quality_head.QualityModel(path)(x), q, rtol=1e-4, atol=1e-3)


def test_a_scoring_run_takes_its_quality_from_the_head(tmp_path):
    x, y, bad = features(seed=1)
    head = quality_head.train(x, y, epochs=10, seed=0, hidden=64)
    path = str(tmp_path / "head.onnx")
    quality_head.export(head, path, x.shape[1])
    ref = quality_head.norms(head, x[~bad])
    with open(tmp_path / "head.card.json", "w") as f:
        json.dump({"name": "head", "task": "quality", "signals": ["learned"],
                   "quantiles": np.quantile(ref, np.linspace(0, 1, 101)).tolist()}, f)
    norms = np.linalg.norm(x, axis=1)
    n = len(x)
    t = pa.table({
        "image_id": [f"i{k}" for k in range(n)], "identity": [f"p{v}" for v in y], "keep": [True] * n,
        "reason": ["ok"] * n, "model_id": ["toy@0"] * n, "embedding": encode_embeddings(x / norms[:, None]),
        "feat_norm": pa.array(norms.astype(np.float32)), "sha1": [f"{k}" for k in range(n)],
        "det_score": pa.array(np.full(n, 0.9, np.float32)), "sharpness": pa.array(np.full(n, 100.0, np.float32)),
        "face_size": pa.array(np.full(n, 100.0, np.float32)),
        "landmarks": pa.array([[38.3, 51.7, 73.5, 51.5, 56.0, 71.7, 41.5, 92.4, 70.7, 92.2]] * n, pa.list_(pa.float32(), 10)),
    })
    plain, _, _ = score_table(t, ScoreConfig())
    learned, _, calib = score_table(t, ScoreConfig(quality_model=path))
    ql = learned["quality"].to_numpy()
    assert calib["quality_signals"] == ["learned"]
    # the head's norms, as percentiles of its reference: the same order as the norms themselves
    learned_norms = quality_head.norms(head, x)
    assert np.corrcoef(np.argsort(np.argsort(ql)), np.argsort(np.argsort(learned_norms)))[0, 1] > 0.99
    assert not np.allclose(plain["quality"].to_numpy(), ql)
