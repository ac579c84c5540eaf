"""align: similarity warp of each face onto a five-point template.

Reads faces (``image_id, landmarks``) and the decoded images they came from; adds ``crop``, the
ArcFace-template crop (``size`` x ``size`` x 3 uint8 RGB, raw bytes) that shards store and retraining
reads, and ``chip``, the recognizer's own input crop (the same bytes when it uses the ArcFace
template at the same size).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.config import AlignConfig
from curate.schema import require
from curate.stages.decode import pixels_of
from models.templates import template, warp


def align(faces: pa.Table, images: pa.Table, cfg: AlignConfig, chip: tuple[str, int]) -> pa.Table:
    require(faces, ("image_id", "landmarks"), "align")
    require(images, ("image_id", "pixels", "width", "height"), "align")
    row_of = {k: i for i, k in enumerate(images["image_id"].to_pylist())}
    arc = template("arcface", cfg.size)
    same = chip == ("arcface", cfg.size)
    chip_tmpl = arc if same else template(*chip)
    crops, chips = [], []
    cache: tuple[int, np.ndarray] | None = None
    for image_id, lm in zip(faces["image_id"].to_pylist(), faces["landmarks"].to_pylist()):
        i = row_of[image_id]
        if cache is None or cache[0] != i:
            cache = (i, pixels_of(images, i))
        pts = np.asarray(lm, np.float32).reshape(5, 2)
        crop = warp(cache[1], pts, arc, cfg.size).tobytes()
        crops.append(crop)
        chips.append(crop if same else warp(cache[1], pts, chip_tmpl, chip[1]).tobytes())
    return faces.append_column("crop", pa.array(crops, pa.binary())).append_column(
        "chip", pa.array(chips, pa.binary())
    )


def crops_of(table: pa.Table, column: str, size: int) -> np.ndarray:
    """A binary column of raw crops -> (N, size, size, 3) uint8."""
    if len(table) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    buf = b"".join(table[column].to_pylist())
    return np.frombuffer(buf, np.uint8).reshape(len(table), size, size, 3)
