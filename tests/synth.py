"""Seeded synthetic identities as curated shards: each identity is a fixed arrangement of coloured
blobs on a face-like ellipse; each sample shifts, scales, recolours and noises it."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curate.schema import conform, images_schema


def identity_face(identity: int, rng: np.random.Generator, seed: int = 0) -> np.ndarray:
    prng = np.random.default_rng(seed * 7919 + identity)
    img = np.full((112, 112, 3), 30, np.uint8)
    cv2.ellipse(img, (56, 60), (38, 48), 0, 0, 360, tuple(int(v) for v in prng.integers(90, 230, 3)), -1)
    for _ in range(6):
        c = tuple(int(v) for v in prng.integers(0, 255, 3))
        x, y, r = (int(v) for v in (prng.integers(30, 82), prng.integers(30, 92), prng.integers(4, 12)))
        cv2.circle(img, (x, y), r, c, -1)
    dx, dy = rng.integers(-4, 5, 2)
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    img = cv2.warpAffine(img, m, (112, 112), borderMode=cv2.BORDER_REPLICATE)
    img = img.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def write_identity_shard(path: str, n_ids: int = 8, per_id: int = 40, seed: int = 0, drop_every: int = 0,
                         mislabel: float = 0.0) -> pa.Table:
    """An ``images`` shard of n_ids x per_id crops; with drop_every=k, every k-th row has keep=False;
    a ``mislabel`` fraction of rows shows another identity's face (column ``noisy`` says which)."""
    rng = np.random.default_rng(seed)
    noisy = []
    rows = {"image_id": [], "item": [], "identity": [], "source": [], "crop": [], "keep": [], "reason": []}
    for i in range(n_ids * per_id):
        ident = i % n_ids
        rows["image_id"].append(f"{i:032x}")
        rows["item"].append(i)
        rows["identity"].append(f"id{ident:03d}")
        rows["source"].append(f"id{ident:03d}/{i}.jpg")
        wrong = rng.random() < mislabel
        noisy.append(wrong)
        shown = (ident + int(rng.integers(1, n_ids))) % n_ids if wrong else ident
        rows["crop"].append(jpeg(identity_face(shown, rng, seed)))
        keep = not (drop_every and i % drop_every == 0)
        rows["keep"].append(keep)
        rows["reason"].append("ok" if keep else "no_face")
    table = conform(pa.table(rows), images_schema(512))
    pq.write_table(table, path, row_group_size=64)
    return table.append_column("noisy", pa.array(noisy))


def pairs(n_ids: int, n_pairs: int, seed: int = 1) -> tuple[list[bytes], np.ndarray]:
    """Alternating same/different pairs of fresh samples: (2P encoded crops, (P,) issame)."""
    rng = np.random.default_rng(seed)
    images, same = [], []
    for p in range(n_pairs):
        a = int(rng.integers(n_ids))
        b = a if p % 2 == 0 else int((a + rng.integers(1, n_ids)) % n_ids)
        images += [jpeg(identity_face(a, rng)), jpeg(identity_face(b, rng))]
        same.append(a == b)
    return images, np.asarray(same)
