"""detect: decoded images -> one row per face; pick: choose the labelled face of each image.

``detect`` reads ``image_id, pixels, width, height`` and returns a *faces* table
(``image_id, face_idx, det_score, bbox, landmarks, face_size, prominence``), faces numbered by
decreasing prominence and capped at ``max_faces``. Prominence = face size x centrality x relative
confidence: centrality falls linearly from 1 at the image centre to 0.5 at a corner (a crawl labels
the big central face), and confidence is the score over the best score in the same image (score
scales differ between detectors; within one image they compare, and a low-scoring face-like patch
beside a clear face is not a second person).

``pick`` reads images + faces and adds ``n_faces, face_idx`` to images (with ``no_face``,
``multi_face_ambiguous`` or ``too_small`` as the reason where they apply) and ``selected`` to faces.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.config import DetectConfig
from curate.schema import BBOX, LANDMARKS, Reason, require
from curate.stages.decode import pixels_of

READS = ("image_id", "pixels", "width", "height")

FACES = pa.schema(
    [
        ("image_id", pa.string()),
        ("face_idx", pa.int16()),
        ("det_score", pa.float32()),
        ("bbox", BBOX),
        ("landmarks", LANDMARKS),
        ("face_size", pa.float32()),
        ("prominence", pa.float32()),
    ]
)


def prominence(boxes: np.ndarray, scores: np.ndarray, width: int, height: int) -> np.ndarray:
    """(k, 4) boxes, (k,) scores -> (k,) size x centrality x relative confidence, px."""
    size = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    d = np.hypot(cx - width / 2, cy - height / 2) / max(np.hypot(width / 2, height / 2), 1.0)
    best = scores.max()
    conf = np.clip(scores / best, 0, 1) if best > 0 else np.ones_like(scores)
    return size * (1.0 - 0.5 * np.clip(d, 0, 1)) * conf


def detect(images: pa.Table, detector, cfg: DetectConfig) -> pa.Table:
    require(images, READS, "detect")
    rows = {n: [] for n in FACES.names}
    ids = images["image_id"].to_pylist()
    decoded = [(i, img) for i in range(len(ids)) if (img := pixels_of(images, i)) is not None]
    found = detector.detect_batch([img for _, img in decoded]) if decoded else []
    for (i, img), faces in zip(decoded, found):
        if not len(faces):
            continue
        h, w = img.shape[:2]
        prom = prominence(faces.boxes, faces.scores, w, h)
        order = np.argsort(-prom, kind="stable")[: cfg.max_faces]
        for rank, k in enumerate(order):
            box = faces.boxes[k]
            rows["image_id"].append(ids[i])
            rows["face_idx"].append(rank)
            rows["det_score"].append(float(faces.scores[k]))
            rows["bbox"].append(box.tolist())
            rows["landmarks"].append(faces.landmarks[k].reshape(10).tolist())
            rows["face_size"].append(float(np.sqrt(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))))
            rows["prominence"].append(float(prom[k]))
    return pa.table(rows, schema=FACES)


def pick(images: pa.Table, faces: pa.Table, cfg: DetectConfig) -> tuple[pa.Table, pa.Table]:
    require(images, ("image_id", "reason", "reason_detail"), "pick")
    require(faces, ("image_id", "face_idx", "prominence", "face_size"), "pick")
    by_image: dict[str, list[tuple[float, float]]] = {}
    for image_id, prom, size in zip(*(faces[c].to_pylist() for c in ("image_id", "prominence", "face_size"))):
        by_image.setdefault(image_id, []).append((prom, size))  # already in face_idx order
    reasons = images["reason"].to_pylist()
    details = images["reason_detail"].to_pylist()
    n_faces, face_idx = [], []
    for i, image_id in enumerate(images["image_id"].to_pylist()):
        found = by_image.get(image_id, [])
        n_faces.append(len(found) if reasons[i] is None else 0)
        face_idx.append(0 if found else None)
        if reasons[i] is not None:
            continue
        if not found:
            reasons[i] = Reason.NO_FACE.value
        elif len(found) > 1 and found[1][0] >= cfg.ambiguity_ratio * found[0][0]:
            reasons[i] = Reason.MULTI_FACE_AMBIGUOUS.value
            details[i] = f"prominence {found[1][0]:.1f} vs {found[0][0]:.1f}"
        elif found[0][1] < cfg.min_face_size:
            reasons[i] = Reason.TOO_SMALL.value
            details[i] = f"face {found[0][1]:.1f} px < {cfg.min_face_size}"
    images = images.drop_columns(["reason", "reason_detail"])
    images = images.append_column("n_faces", pa.array(n_faces, pa.int16()))
    images = images.append_column("face_idx", pa.array(face_idx, pa.int16()))
    images = images.append_column("reason", pa.array(reasons, pa.string()))
    images = images.append_column("reason_detail", pa.array(details, pa.string()))
    faces = faces.append_column("selected", pa.compute.equal(faces["face_idx"], 0))
    return images, faces
