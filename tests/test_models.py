"""The real model code paths: dlib on a real face photo, insightface on tiny generated ONNX models."""

import numpy as np
import pytest
from skimage import data

from curate.errors import ConfigError, ModelError
from curate.stages.embed import normalise
from curate.testing import tiny_models
from models import DETECTORS, RECOGNIZERS
from models.templates import template, warp

# Measured with facenet-pytorch's MTCNN on this photo (ArcFace order); dlib's 68-point reduction
# must land within a few pixels of it.
ASTRONAUT_5PT = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0], [201.7, 139.2], [245.3, 141.9]])


def test_dlib_detects_the_astronaut_with_arcface_landmarks(dlib_models):
    faces = dlib_models.detector.detect(data.astronaut())
    assert len(faces) == 1  # the mission patch (HOG score ~0.1) is below the default threshold
    x1, y1, x2, y2 = faces.boxes[0]
    assert 160 < x1 < 190 and 60 < y1 < 90 and 250 < x2 < 280 and 150 < y2 < 180
    assert np.abs(faces.landmarks[0] - ASTRONAUT_5PT).max() < 8
    assert len(dlib_models.detector.detect(data.camera())) == 0


def test_dlib_recognizer_same_person_close_other_far(dlib_models):
    det, rec = dlib_models.detector, dlib_models.recognizer
    img = data.astronaut()
    lm = det.detect(img).landmarks[0]
    flipped = img[:, ::-1].copy()
    lm_f = det.detect(flipped).landmarks[0]
    chips = np.stack([warp(img, lm, template(rec.template, rec.size), rec.size),
                      warp(flipped, lm_f, template(rec.template, rec.size), rec.size)])
    raw = rec.embed(chips)
    assert raw.shape == (2, 128) and rec.dim == 128
    assert np.linalg.norm(raw[0] - raw[1]) < 0.6  # dlib's same-person threshold
    noise = np.random.default_rng(0).integers(0, 255, (1, 150, 150, 3), dtype=np.uint8)
    assert np.linalg.norm(raw[0] - rec.embed(noise)[0]) > np.linalg.norm(raw[0] - raw[1])


def test_insightface_scrfd_code_path_on_a_tiny_onnx_detector(tiny_onnx):
    det = DETECTORS.build(f"insightface:{tiny_onnx['det']}")
    assert det.id.startswith("insightface:det.onnx@")
    faces = det.detect(tiny_models.bright_square_image(128, at=(48, 64)))
    assert len(faces) == 1 and faces.scores[0] > 0.99
    np.testing.assert_allclose(faces.boxes[0], [16, 32, 80, 96], atol=1e-3)
    assert faces.landmarks.shape == (1, 5, 2)
    assert len(det.detect(np.full((128, 128, 3), 10, np.uint8))) == 0


def test_onnx_recognizer_returns_raw_features(tiny_onnx):
    rec = RECOGNIZERS.build(f"onnx:{tiny_onnx['rec']}")
    assert (rec.size, rec.dim, rec.template) == (112, 32, "arcface")
    crops = np.random.default_rng(1).integers(0, 255, (5, 112, 112, 3), dtype=np.uint8)
    raw = rec.embed(crops)
    unit, norms = normalise(raw)
    assert raw.shape == (5, 32) and not np.allclose(norms, 1.0)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(rec.embed(crops[:2]), raw[:2], rtol=1e-5)  # batch-independent


def test_insightface_model_directory_routes_by_task(tmp_path, tiny_onnx):
    import shutil

    for k in ("det", "rec"):
        shutil.copy(tiny_onnx[k], tmp_path / f"{k}.onnx")
    assert DETECTORS.build(f"insightface:{tmp_path}").id.startswith("insightface:det.onnx")
    assert RECOGNIZERS.build(f"insightface:{tmp_path}").id.startswith("rec.onnx")


def test_missing_models_and_unknown_names_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="--allow-download"):
        DETECTORS.build("insightface:buffalo_l")  # never touches the network without permission
    with pytest.raises(ModelError, match="no such file"):
        RECOGNIZERS.build("onnx:/nonexistent.onnx")
    with pytest.raises(ConfigError, match="known: dlib-hog"):
        DETECTORS.build("yolo")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        DETECTORS.build(f"insightface:{tmp_path / 'broken.onnx'}")


def test_model_card_sha256_mismatch_is_an_error(tmp_path):
    import json

    from curate.errors import ModelError
    from curate.testing import tiny_models
    from models.cards import file_sha256
    from models.registry import RECOGNIZERS

    path = tiny_models.arcface(str(tmp_path / "rec.onnx"))
    card = tmp_path / "rec.card.json"
    card.write_text(json.dumps({"name": "rec", "sha256": file_sha256(path)}))
    assert RECOGNIZERS.build(f"onnx:{path}").dim > 0  # the card matches: loads
    card.write_text(json.dumps({"name": "rec", "sha256": "0" * 64}))
    with pytest.raises(ModelError, match="does not match its model card"):
        RECOGNIZERS.build(f"onnx:{path}")


def test_builtin_cards_match_the_offline_dlib_models():
    frm = pytest.importorskip("face_recognition_models")
    from models.cards import card_for, verified_sha256

    for p in (frm.face_recognition_model_location(), frm.pose_predictor_model_location()):
        card, where = card_for(p)
        assert verified_sha256(p) == card["sha256"] and card["licence"]


def test_every_recognizer_satisfies_the_protocol(tiny_onnx):
    """The pipeline's one interface to a recognizer (models.recognizers.Recognizer): each kind built
    here has every attribute, of its type, and embeds a batch to (N, dim) float32."""
    import numpy as np

    from models import RECOGNIZERS
    from models.recognizers import Recognizer

    specs = ["edgeface_s", "w600k_mbf", "sface", f"onnx:{tiny_onnx['rec']}"]
    try:
        import dlib  # noqa: F401

        specs.append("dlib-resnet")
    except ImportError:
        pass
    for spec in specs:
        rec = RECOGNIZERS.build(spec)
        assert isinstance(rec, Recognizer), spec
        assert isinstance(rec.id, str) and "@" in rec.id and isinstance(rec.card, dict), spec
        assert isinstance(rec.template, str) and isinstance(rec.size, int) and isinstance(rec.dim, int), spec
        out = rec.embed(np.zeros((2, rec.size, rec.size, 3), np.uint8) + 128)
        assert out.shape == (2, rec.dim) and out.dtype == np.float32, spec


def test_the_batchable_graph_is_cached_by_the_models_digest(tmp_path, monkeypatch, tiny_onnx):
    """The rewrite (and onnx's import) happens once per model; the cached graph is the same bytes,
    and a file without external data is answered without onnx."""
    import os

    from models import runtime

    monkeypatch.setenv("FACECURATE_CACHE", str(tmp_path / "cache"))
    path = tiny_onnx["rec"]
    assert runtime.model_files(path) == [path]
    first = runtime.batchable_cached(path)
    cached = os.listdir(tmp_path / "cache" / "onnx")
    assert first == runtime.batchable(path) and len(cached) == 1 and cached[0].endswith(f"-0-v{runtime.REWRITE}.onnx")
    monkeypatch.setattr(runtime, "batchable", lambda *a, **k: pytest.fail("rewritten again"))
    assert runtime.batchable_cached(path) == first
