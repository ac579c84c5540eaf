"""Seeded synthetic identities as curated shards: each identity is a fixed arrangement of coloured
blobs on a face-like ellipse; each sample shifts, scales, recolours and noises it."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from curate.schema import conform, images_schema
from curate.stats import unit


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


def family_centers(n: int, dim: int, rng: np.random.Generator, size: tuple[int, int] = (2, 12),
                   cos: tuple[float, float] = (0.3, 0.6)) -> tuple[np.ndarray, np.ndarray]:
    """(centers (n, dim) unit float32, family (n,)): identities in families of ``size`` look-alikes
    whose centers sit at cosine ``cos`` (drawn per family) to each other, and near 0 to the rest:
    the geometry of a real crawl, where one's nearest other identities are a few similar people."""
    fam = np.repeat(np.arange(n), rng.integers(size[0], size[1] + 1, n))[:n]
    c = rng.uniform(*cos, fam.max() + 1)[fam][:, None]
    dirs = unit(rng.standard_normal((fam.max() + 1, dim), dtype=np.float32))
    own = unit(rng.standard_normal((n, dim), dtype=np.float32))
    return unit(np.sqrt(c) * dirs[fam] + np.sqrt(1 - c) * own).astype(np.float32), fam


def family_faces(centers: np.ndarray, family: np.ndarray, n: int, rng: np.random.Generator, noise: float = 0.1,
                 angle: tuple[float, float] = (45.0, 7.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(faces (n, dim) unit float32, label, true identity): faces at ``angle`` (mean, sd, degrees)
    from their true center, as a recognizer's faces lie from their identity's template; ``noise``
    of them labelled as another identity, half a look-alike of their family, half anyone."""
    ids = len(centers)
    true = rng.integers(0, ids, n)
    theta = np.radians(np.clip(rng.normal(*angle, n), 5, 85)).astype(np.float32)[:, None]
    g = rng.standard_normal((n, centers.shape[1]), dtype=np.float32)
    g -= np.einsum("nd,nd->n", g, centers[true])[:, None] * centers[true]
    faces = unit(np.cos(theta) * centers[true] + np.sin(theta) * unit(g))
    label = true.copy()
    wrong = np.flatnonzero(rng.random(n) < noise)
    start = np.searchsorted(family, family[true[wrong]])  # families are runs of consecutive identities
    size = np.searchsorted(family, family[true[wrong]], side="right") - start
    look_alike = start + (true[wrong] - start + rng.integers(1, np.maximum(size, 2))) % np.maximum(size, 1)
    anyone = (true[wrong] + rng.integers(1, ids, len(wrong))) % ids
    label[wrong] = np.where((rng.random(len(wrong)) < 0.5) & (size > 1), look_alike, anyone)
    return faces.astype(np.float32), label, true


class EmbeddingCrawl:
    """A crawl already embedded: the images rows scoring reads (curate.curation.READ, plus keep
    and reason), written shard by shard so a 10M-face crawl never sits in memory. Identities are
    clusters on the sphere (~35 deg spread); ``noise`` of the faces belong to another identity;
    ``dups`` are copies of an earlier face of their shard (half of them byte-identical: same
    sha1 and embedding; half re-saved: cosine ~0.98, its hashes a bit away); other rows' hashes are random; the last identity is a second label of the first person (a merge candidate); 1% of
    rows have no face. ``cross`` of the re-saved copies are filed under another identity (label
    noise) with 1-2 bits of their 64-bit photo hash flipped (``cross_copy``). Labels are shuffled over the crawl (an identity spans shards) unless
    ``grouped``. Truth: ``noise`` and ``dup`` per row, for precision and recall."""

    def __init__(self, n: int, ids: int, dim: int = 512, noise: float = 0.1, dups: float = 0.01, seed: int = 0,
                 grouped: bool = False, shard_size: int = 10_000, cross: float = 0.0):
        rng = np.random.default_rng(seed)
        self.n, self.dim, self.seed, self.shard_size = n, dim, seed, shard_size
        self.centers = rng.standard_normal((ids, dim), dtype=np.float32)
        self.centers[-1] = self.centers[0] + 0.2 * rng.standard_normal(dim, dtype=np.float32) / np.sqrt(dim) * np.linalg.norm(self.centers[0])
        self.centers /= np.linalg.norm(self.centers, axis=1, keepdims=True)
        self.label = np.arange(n, dtype=np.int64) % ids
        if not grouped:
            rng.shuffle(self.label)
        self.noise = rng.random(n) < noise
        self.true = self.label.copy()
        self.true[self.noise] = (self.label[self.noise] + rng.integers(1, max(ids, 2), int(self.noise.sum()))) % ids
        self.dup = (rng.random(n) < dups) & (np.arange(n) % shard_size > 0)
        start = np.arange(n) // shard_size * shard_size
        self.src = np.where(self.dup, start + (rng.random(n) * (np.arange(n) - start)).astype(np.int64), -1)
        while (chained := self.dup & self.dup[np.maximum(self.src, 0)]).any():  # a copy of a copy: of its photo
            self.src[chained] = self.src[self.src[chained]]
        self.label[self.dup], self.noise[self.dup] = self.label[self.src[self.dup]], self.noise[self.src[self.dup]]
        self.same_bytes = self.dup & (rng.random(n) < 0.5)
        self.no_face = rng.random(n) < 0.01
        self.cross_copy = self.dup & ~self.same_bytes & (rng.random(n) < cross)
        if cross:  # drawn after the rest: a crawl without them is the same crawl
            moved = np.flatnonzero(self.cross_copy)
            self.label[moved] = (self.label[moved] + rng.integers(1, max(ids, 2), len(moved))) % ids
            self.noise[moved] = True

    @property
    def shards(self) -> int:
        return -(-self.n // self.shard_size)

    def shard(self, s: int) -> pa.Table:
        from curate.schema import encode_embeddings

        a, b = s * self.shard_size, min(self.n, (s + 1) * self.shard_size)
        rng = np.random.default_rng([self.seed, s])
        m = b - a
        e = self.centers[self.true[a:b]] + rng.standard_normal((m, self.dim), dtype=np.float32) * (0.6 / np.sqrt(self.dim))
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        dup = np.flatnonzero(self.dup[a:b])
        e[dup] = e[self.src[a:b][dup] - a]
        resaved = np.flatnonzero(self.dup[a:b] & ~self.same_bytes[a:b])  # a re-saved copy: cosine ~0.98 to its source
        e[resaved] += rng.standard_normal((len(resaved), self.dim), dtype=np.float32) * (0.2 / np.sqrt(self.dim))
        e[resaved] /= np.linalg.norm(e[resaved], axis=1, keepdims=True)
        ih = rng.integers(0, 256, (m, 80), dtype=np.uint8)
        ih[dup] = ih[self.src[a:b][dup] - a]  # a copy's hashes are its source's ...
        ih[resaved, 20] ^= 1  # ... up to a bit
        far = np.flatnonzero(self.cross_copy[a:b])  # ... or two, in the 64-bit hash
        for k in (1, 2):
            some = far if k == 1 else far[rng.random(len(far)) < 0.5]
            bit = rng.integers(0, 64, len(some))
            ih[some, bit // 8] ^= (1 << (bit % 8)).astype(np.uint8)
            ih[some, 8 + (bit + 13) % 64 // 8] ^= (1 << ((bit + 13) % 8)).astype(np.uint8)
        sha = np.array([f"{i:040x}" for i in range(a, b)], dtype=object)
        same = np.flatnonzero(self.same_bytes[a:b])
        sha[same] = sha[self.src[a:b][same] - a]
        no_face = self.no_face[a:b]
        lm = np.tile(np.array([38.3, 51.7, 73.5, 51.5, 56.0, 71.7, 41.5, 92.4, 70.7, 92.2], np.float32), (m, 1))
        lm += rng.normal(0, 2, lm.shape).astype(np.float32)
        mask = pa.array(no_face)
        return pa.table({
            "image_id": pa.array([f"{i:012d}" for i in range(a, b)]),
            "identity": pa.array([f"id{x:06d}" for x in self.label[a:b]]),
            "sha1": pa.array(sha.tolist(), pa.string()),
            "embedding": pc.if_else(mask, pa.nulls(m, pa.binary(2 * self.dim)), encode_embeddings(e)),
            "feat_norm": pa.array(rng.uniform(10, 40, m).astype(np.float32)),
            "model_id": pa.array(["synthetic"] * m),
            "landmarks": pa.FixedSizeListArray.from_arrays(pa.array(lm.ravel()), 10).cast(pa.list_(pa.float32(), 10)),
            "face_size": pa.array(rng.uniform(40, 200, m).astype(np.float32)),
            "det_score": pa.array(rng.uniform(0.5, 1.0, m).astype(np.float32)),
            "sharpness": pa.array(rng.uniform(20, 400, m).astype(np.float32)),
            "brightness": pa.array(rng.uniform(60, 180, m).astype(np.float32)),
            "contrast": pa.array(rng.uniform(30, 70, m).astype(np.float32)),
            "detail": pa.array(rng.uniform(0.05, 0.4, m).astype(np.float32)),
            "keep": pa.array(~no_face),
            "reason": pa.array(np.where(no_face, "no_face", "ok").tolist()),
            "image_hash": pa.array([x.tobytes() for x in ih], pa.binary(80)),
            "source": pa.array([f"id{x:06d}/{i:012d}.jpg" for x, i in zip(self.label[a:b], range(a, b))]),
            "n_bytes": pa.array(rng.integers(20_000, 200_000, m)), "width": pa.array(np.full(m, 250, np.int32)),
            "height": pa.array(np.full(m, 250, np.int32)),
            "n_faces": pa.array((~no_face).astype(np.int16)),
            "face_idx": pa.array(np.zeros(m, np.int16), mask=no_face),
        })
