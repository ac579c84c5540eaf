"""Training data from curated shards: aligned crops streamed from Parquet, never all in memory.

``ShardFaces`` reads ``images`` shards (``identity``, ``crop``, ``keep``), maps identities to
contiguous labels (sorted, so a label map is reproducible), and yields (3, 112, 112) float tensors,
RGB scaled as (x - 127.5) / 127.5 (what insightface's ArcFaceONNX feeds an exported model), with
horizontal flips and, optionally, AdaFace's low-quality augmentations. Files are shuffled per
epoch and split across DataLoader workers; rows are shuffled within a buffer.
"""

from __future__ import annotations

import glob
import os
import random

import cv2
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from torch.utils.data import IterableDataset, get_worker_info

from curate.errors import InputError
from models.eval import decode_image as decode_crop  # noqa: F401  (one decoder of stored crops)
from models.eval import to_tensor


def shard_files(path: str) -> list[str]:
    """A run directory (its ``images/`` shards), a directory of Parquet files, or one file."""
    if os.path.isfile(path):
        return [path]
    d = os.path.join(path, "images") if os.path.isdir(os.path.join(path, "images")) else path
    files = sorted(glob.glob(os.path.join(d, "*.parquet")))
    if not files:
        raise InputError(f"no Parquet shards under {path}")
    return files


def usable_rows(files: list[str], kept_only: bool) -> list[tuple[str, str]]:
    """(image_id, identity) of every row that can be trained on: it has a crop and an identity,
    and was kept by the curation unless all rows are wanted."""
    out = []
    for f in files:
        t = pq.read_table(f, columns=["image_id", "identity", "keep", "crop"])
        mask = pc.and_(pc.is_valid(t["crop"]), pc.is_valid(t["identity"]))
        if kept_only:
            mask = pc.and_(mask, t["keep"])
        t = t.filter(mask)
        out += list(zip(t["image_id"].to_pylist(), t["identity"].to_pylist()))
    return out


class LowQualityAugment:
    """AdaFace's augmentations, each with probability p: random crop onto a zero canvas (scale
    0.2-1.0), low resolution (side ratio U(0.2, 1), random interpolation down and up) and colour
    jitter (brightness, contrast, saturation 0.5). Output stays HxW."""

    INTERP = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4)

    def __init__(self, p: float = 0.2, crop: bool = True, low_res: bool = True, jitter: bool = True):
        self.p, self.crop, self.low_res, self.jitter = p, crop, low_res, jitter

    def __call__(self, img: np.ndarray, rng: random.Random) -> tuple[np.ndarray, tuple[bool, bool, bool]]:
        h, w = img.shape[:2]
        applied = [False, False, False]
        if self.crop and rng.random() < self.p:
            scale = rng.uniform(0.2, 1.0)
            ch, cw = max(int(h * np.sqrt(scale)), 1), max(int(w * np.sqrt(scale)), 1)
            y, x = rng.randint(0, h - ch), rng.randint(0, w - cw)
            canvas = np.zeros_like(img)
            canvas[y : y + ch, x : x + cw] = img[y : y + ch, x : x + cw]
            img, applied[0] = canvas, True
        if self.low_res and rng.random() < self.p:
            r = rng.uniform(0.2, 1.0)
            small = cv2.resize(img, (max(int(w * r), 1), max(int(h * r), 1)), interpolation=rng.choice(self.INTERP))
            img, applied[1] = cv2.resize(small, (w, h), interpolation=rng.choice(self.INTERP)), True
        if self.jitter and rng.random() < self.p:
            f = img.astype(np.float32)
            f *= rng.uniform(0.5, 1.5)  # brightness
            mean = f.mean()
            f = (f - mean) * rng.uniform(0.5, 1.5) + mean  # contrast
            gray = f.mean(axis=2, keepdims=True)
            f = (f - gray) * rng.uniform(0.5, 1.5) + gray  # saturation
            img, applied[2] = np.clip(f, 0, 255).astype(np.uint8), True
        return img, tuple(applied)


class ShardFaces(IterableDataset):
    def __init__(self, path: str, kept_only: bool = True, flip: bool = True, augment: LowQualityAugment | None = None,
                 shuffle_buffer: int = 4096, seed: int = 0, labels: dict[str, int] | None = None):
        self.files = shard_files(path)
        self.kept_only, self.flip, self.augment = kept_only, flip, augment
        self.shuffle_buffer, self.seed, self.epoch = shuffle_buffer, seed, 0
        self._rows_usable = usable_rows(self.files, kept_only)
        ids = {i for _, i in self._rows_usable}
        self.labels = labels if labels is not None else {k: i for i, k in enumerate(sorted(ids))}
        self.exclude: set[str] = set()  # image_ids dropped during training (sub-center cleaning)

    def drop(self, image_ids) -> None:
        self.exclude |= set(image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        return sum(i in self.labels and k not in self.exclude for k, i in self._rows_usable)

    def _rows(self, files, rng=None):
        """(image_id, crop, label) of usable rows; row groups in random order when rng is given."""
        for f in files:
            pf = pq.ParquetFile(f)
            groups = range(pf.num_row_groups)
            for g in (rng.sample(groups, len(groups)) if rng else groups):
                t = pf.read_row_group(g, columns=["image_id", "identity", "crop", "keep"])
                for iid, ident, crop, keep in zip(*(t[c].to_pylist() for c in ("image_id", "identity", "crop", "keep"))):
                    if crop is None or (self.kept_only and not keep) or ident not in self.labels or iid in self.exclude:
                        continue
                    yield iid, crop, self.labels[ident]

    def plain(self):
        """(image_id, tensor, label) of every usable row in file order, no flip or augmentation."""
        for iid, crop, label in self._rows(self.files):
            yield iid, to_tensor(decode_crop(crop)), label

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(self.seed * 1_000_003 + self.epoch * 101 + wid)
        files = random.Random(self.seed + self.epoch).sample(self.files, len(self.files))[wid::nw]
        buf = []
        for row in self._rows(files, rng):
            buf.append(row)
            if len(buf) >= self.shuffle_buffer:
                yield self._item(buf.pop(rng.randrange(len(buf))), rng)
        rng.shuffle(buf)
        for row in buf:
            yield self._item(row, rng)

    def _item(self, row, rng):
        _, crop, label = row
        img = decode_crop(crop)
        if self.flip and rng.random() < 0.5:
            img = img[:, ::-1]
        if self.augment:
            img, _ = self.augment(img, rng)
        return to_tensor(img), label

