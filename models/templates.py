"""Five-point alignment templates (left eye, right eye, nose tip, left mouth, right mouth), in
pixels of the model's square input, and the similarity warp onto them."""

from __future__ import annotations

import cv2
import numpy as np

# insightface's ArcFace template for 112x112 inputs.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)

# Where dlib's 150x150 face chip (get_face_chip, padding 0.25) puts the five points, measured on
# 9 real faces (skimage astronaut, insightface's Tom Hanks and t1 samples) and made left-right
# symmetric. Warping with it gives descriptors within L2 0.08-0.24 of dlib's own chip (dlib's
# same-person threshold is 0.6).
DLIB_150 = np.array(
    [[49.4, 46.0], [100.6, 46.0], [75.0, 78.7], [50.6, 101.5], [99.4, 101.5]], dtype=np.float32
)


def template(name: str, size: int) -> np.ndarray:
    """A named template scaled to ``size``. ArcFace at 128 follows insightface (scale, shift x by 8)."""
    if name == "arcface":
        if size % 112 == 0:
            return ARCFACE_112 * (size / 112)
        if size % 128 == 0:
            t = ARCFACE_112 * (size / 128)
            t[:, 0] += 8.0 * size / 128
            return t
    if name == "dlib" and size == 150:
        return DLIB_150
    raise ValueError(f"no template {name!r} at size {size}")


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, translation) mapping src -> dst.

    Umeyama's closed form on the 5 points: no RANSAC, deterministic, no deprecated API.
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s**2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def warp(img: np.ndarray, landmarks: np.ndarray, tmpl: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 + (5, 2) points -> (size, size, 3) uint8 aligned crop."""
    m = similarity(landmarks, tmpl)
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
