import numpy as np
import pyarrow as pa
import pytest

from curate.config import AlignConfig, DetectConfig
from curate.stages.align import align, crops_of
from curate.stages.detect import FACES, pick, prominence
from models.templates import ARCFACE_112, similarity, template, warp


def test_similarity_recovers_a_known_transform_exactly():
    angle, scale, t = 0.3, 1.7, np.array([12.0, -5.0])
    r = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_112 * 2 + 40
    dst = src @ r.T + t
    m = similarity(src, dst)
    np.testing.assert_allclose(m[:, :2], r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-7)


def test_warp_puts_landmarks_on_the_template():
    img = np.zeros((300, 300, 3), np.uint8)
    pts = ARCFACE_112 * 1.5 + [60, 40]  # the face, larger and shifted
    for x, y in pts.astype(int):
        img[y - 1 : y + 2, x - 1 : x + 2] = 255
    crop = warp(img, pts, ARCFACE_112, 112)
    for x, y in ARCFACE_112:
        assert crop[int(round(y)), int(round(x))].max() > 100


def test_arcface_template_at_128_follows_insightface():
    t = template("arcface", 128)
    np.testing.assert_allclose(t[0], ARCFACE_112[0] + [8.0, 0.0])
    with pytest.raises(ValueError):
        template("arcface", 100)


def _faces(rows):
    return pa.table({
        "image_id": [r[0] for r in rows], "face_idx": pa.array([r[1] for r in rows], pa.int16()),
        "det_score": pa.array([1.0] * len(rows), pa.float32()),
        "bbox": pa.array([[0, 0, 1, 1]] * len(rows), FACES.field("bbox").type),
        "landmarks": pa.array([ARCFACE_112.reshape(10).tolist()] * len(rows), FACES.field("landmarks").type),
        "face_size": pa.array([r[3] for r in rows], pa.float32()),
        "prominence": pa.array([r[2] for r in rows], pa.float32()),
    }, schema=FACES)


def test_pick_assigns_reasons_at_their_boundaries():
    cfg = DetectConfig(min_face_size=20, ambiguity_ratio=0.8)
    images = pa.table({"image_id": list("abcdef"), "reason": [None] * 5 + ["decode_error"],
                       "reason_detail": [None] * 6})
    faces = _faces([
        ("b", 0, 100.0, 50.0),                        # one clear face
        ("c", 0, 100.0, 50.0), ("c", 1, 79.9, 40.0),  # second face just under the ratio: fine
        ("d", 0, 100.0, 50.0), ("d", 1, 80.0, 40.0),  # at the ratio: ambiguous
        ("e", 0, 19.9, 19.9),                          # just under min_face_size
    ])
    out, faces = pick(images, faces, cfg)
    assert out["reason"].to_pylist() == ["no_face", None, None, "multi_face_ambiguous", "too_small", "decode_error"]
    assert out["n_faces"].to_pylist() == [0, 1, 2, 2, 1, 0]
    assert out["face_idx"].to_pylist() == [None, 0, 0, 0, 0, None]
    assert faces["selected"].to_pylist() == [True, True, False, True, False, True]


def test_prominence_prefers_big_central_confident_faces():
    boxes = np.array([[40, 40, 60, 60], [0, 0, 20, 20], [40, 40, 60, 60]], np.float32)
    p = prominence(boxes, np.array([1.0, 1.0, 0.25], np.float32), 100, 100)
    assert p[0] == pytest.approx(20.0) and p[1] == pytest.approx(20 * (1 - 0.5 * np.hypot(40, 40) / np.hypot(50, 50)))
    assert p[2] == pytest.approx(5.0)


def test_align_emits_arcface_crop_and_recognizer_chip():
    img = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    images = pa.table({"image_id": ["a"], "pixels": pa.array([img.tobytes()], pa.large_binary()),
                       "width": pa.array([200], pa.int32()), "height": pa.array([200], pa.int32())})
    faces = _faces([("a", 0, 1.0, 50.0)])
    same = align(faces, images, AlignConfig(), ("arcface", 112))
    assert crops_of(same, "crop", 112).shape == (1, 112, 112, 3)
    assert same["crop"][0].as_py() == same["chip"][0].as_py()
    dlib = align(faces, images, AlignConfig(), ("dlib", 150))
    assert crops_of(dlib, "chip", 150).shape == (1, 150, 150, 3)
    # landmarks already on the template: the ArcFace crop is the top-left 112x112 of the image
    np.testing.assert_array_equal(crops_of(same, "crop", 112)[0], img[:112, :112])
