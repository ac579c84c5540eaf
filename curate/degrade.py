"""Seeded degradations that make a face photo hard or impossible to identify: what a crawl's
worst images look like. Used to measure quality signals (does a signal rank the degraded copy
below its clean original?) and to plant ``unidentifiable`` faces in benchmark crawls.

Each takes an RGB photo (H, W, 3) uint8, the face box (x1, y1, x2, y2) in it when known (the
image centre otherwise) and a numpy Generator, and returns a new RGB photo. Strengths scale with
the face size, so a 60 px face and a 400 px face are degraded alike.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

Box = tuple[float, float, float, float]


def _box(img: np.ndarray, box: Box | None) -> tuple[int, int, int, int, float]:
    h, w = img.shape[:2]
    if box is None:
        s = 0.6 * min(h, w)
        box = (w / 2 - s / 2, h / 2 - s / 2, w / 2 + s / 2, h / 2 + s / 2)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    return x1, y1, x2, y2, max(float(np.sqrt(max(x2 - x1, 1) * max(y2 - y1, 1))), 8.0)


def blur(img, box, rng):
    """Gaussian blur, sigma 8-12% of the face size: features smeared, outline kept."""
    *_, size = _box(img, box)
    return cv2.GaussianBlur(img, (0, 0), sigmaX=size * rng.uniform(0.08, 0.12))


def downscale(img, box, rng):
    """The face brought down to 8-12 px across, then back up (a thumbnail of a thumbnail)."""
    *_, size = _box(img, box)
    f = rng.uniform(8, 12) / size
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def occlusion(img, box, rng):
    """A grey block over the eyes and nose (the upper 60-70% of the face)."""
    x1, y1, x2, y2, _ = _box(img, box)
    out = img.copy()
    bottom = y1 + int((y2 - y1) * rng.uniform(0.6, 0.7))
    out[max(y1 - (y2 - y1) // 10, 0) : bottom, max(x1 - (x2 - x1) // 10, 0) : x2 + (x2 - x1) // 10] = int(rng.integers(90, 160))
    return out


def extreme_crop(img, box, rng):
    """Only a corner of the face is left: the photo is cut through the face, keeping a quarter."""
    x1, y1, x2, y2, _ = _box(img, box)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    h, w = img.shape[:2]
    quads = [(0, 0, cx, cy), (cx, 0, w, cy), (0, cy, cx, h), (cx, cy, w, h)]
    a, b, c, d = quads[int(rng.integers(4))]
    out = img[b:d, a:c]
    return out.copy() if out.size else img.copy()


def dark(img, box, rng):
    """Exposure cut to 4-8% with sensor noise: a night shot."""
    x = img.astype(np.float32) * rng.uniform(0.04, 0.08) + rng.normal(0, 2.0, img.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def noise(img, box, rng):
    """Heavy Gaussian noise (sigma 70-90 grey levels)."""
    x = img.astype(np.float32) + rng.normal(0, rng.uniform(70, 90), img.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


DEGRADATIONS: dict[str, Callable[[np.ndarray, Box | None, np.random.Generator], np.ndarray]] = {
    "blur": blur, "downscale": downscale, "occlusion": occlusion, "extreme_crop": extreme_crop, "dark": dark,
    "noise": noise,
}
