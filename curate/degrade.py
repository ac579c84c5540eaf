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


def motion_blur(img, box, rng):
    """Camera shake: a straight streak 25-35% of the face size long, at any angle."""
    *_, size = _box(img, box)
    n = max(3, int(round(size * rng.uniform(0.25, 0.35))) | 1)
    k = np.zeros((n, n), np.float32)
    k[n // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    k = cv2.warpAffine(k, rot, (n, n))
    return cv2.filter2D(img, -1, k / max(float(k.sum()), 1e-6))


def jpeg(img, box, rng):
    """A thumbnail saved at JPEG quality 5-20: the face brought to 20-28 px, compressed, brought back."""
    *_, size = _box(img, box)
    f = min(rng.uniform(20, 28) / size, 1.0)
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(5, 21))])
    small = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def occlusion(img, box, rng):
    """Half the face or more hidden, as crawls hide it: a hand or a block over the eyes and nose,
    sunglasses with a face mask, or a microphone and the hand holding it over the nose and mouth."""
    x1, y1, x2, y2, _ = _box(img, box)
    out = np.ascontiguousarray(img.copy())
    fw, fh = x2 - x1, y2 - y1
    cx = (x1 + x2) // 2
    shape = int(rng.integers(3))
    if shape == 0:  # a hand or a block over the eyes and nose (upper 60-70%)
        bottom = y1 + int(fh * rng.uniform(0.6, 0.7))
        colour = tuple(int(c) for c in rng.integers(90, 200, 3))
        cv2.ellipse(out, (cx, (y1 + bottom) // 2), (int(fw * 0.62), max((bottom - y1) // 2 + fh // 8, 1)), 0, 0, 360, colour, -1)
    elif shape == 1:  # dark glasses over the eyes, a pale mask from the nose down
        ey = y1 + int(fh * rng.uniform(0.3, 0.4))
        cv2.rectangle(out, (x1 - fw // 20, ey - fh // 7), (x2 + fw // 20, ey + fh // 8), (15, 15, 20), -1)
        cv2.rectangle(out, (x1, y1 + int(fh * 0.55)), (x2, y2 + fh // 10), tuple(int(c) for c in rng.integers(170, 240, 3)), -1)
    else:  # a microphone head over the nose and mouth, the hand and handle below
        r = int(fw * rng.uniform(0.3, 0.38))
        cy = y1 + int(fh * 0.6)
        cv2.rectangle(out, (cx - r // 2, cy), (cx + r // 2, y2 + fh // 2), (30, 30, 30), -1)
        cv2.circle(out, (cx, cy), r, (60, 60, 65), -1)
        cv2.ellipse(out, (cx, cy + int(r * 1.6)), (int(r * 1.1), int(r * 0.8)), 0, 0, 360, (150, 110, 90), -1)
        cv2.rectangle(out, (x1, y1 + int(fh * 0.25)), (x2, y1 + int(fh * 0.45)), (15, 15, 20), -1)  # and dark glasses
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
    "blur": blur, "motion_blur": motion_blur, "downscale": downscale, "jpeg": jpeg, "occlusion": occlusion,
    "extreme_crop": extreme_crop, "dark": dark, "noise": noise,
}
