"""phash: perceptual hashes of the whole photo, which tell the same photo saved again from another
photo (curate.stages.dedup.copy_pairs decides).

``image_hash`` (80 bytes, fixed_size_binary): imagehash's DCT hash (pHash) of the photo at two
sizes, each followed by its mirror image's, so that a flipped copy matches:

    bytes  0-15   phash(photo, 8)  + phash(mirrored photo, 8)     64 bits each
    bytes 16-79   phash(photo, 16) + phash(mirrored photo, 16)    256 bits each

The 64-bit hash is the one imagededup and most dedup tools use; on its own it calls distinct shots
of one lab sitting copies (1 pair in 20 of ORL/Yale within 2 bits). The 256-bit hash sees the
expression, glasses or light that changed between two shots, and barely moves for a re-encoded,
resized or mirrored copy (at most 4 bits for 90% of them).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

SIZES = (8, 16)  # hash sides: 64 and 256 bits
WIDTH = sum(2 * s * s // 8 for s in SIZES)  # bytes
IMAGE_HASH = pa.binary(WIDTH)


def image_hash(pixels: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> the photo's hashes, each with its mirror image's (module doc). The
    photo is shrunk once (OpenCV) to the hashes' own input sizes; imagehash hashes those."""
    import cv2
    import imagehash
    from PIL import Image

    side = 4 * SIZES[-1]
    gray = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
    # sampled to 4x the side, then averaged 4x4: as area averaging, in a tenth of its time on a big photo
    small = cv2.resize(cv2.resize(gray, (4 * side, 4 * side), interpolation=cv2.INTER_LINEAR), (side, side),
                       interpolation=cv2.INTER_AREA)
    out = []
    for size in SIZES:
        side = cv2.resize(small, (4 * size, 4 * size), interpolation=cv2.INTER_AREA) if 4 * size != small.shape[0] else small
        out += [np.packbits(imagehash.phash(Image.fromarray(np.ascontiguousarray(im)), hash_size=size).hash.ravel()).tobytes()
                for im in (side, side[:, ::-1])]
    return b"".join(out)


_POP = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, K) uint8 and (N, K) uint8 -> (N,) int32: the Hamming distance of each row pair."""
    return _POP[a ^ b].sum(1, dtype=np.int32)


def distances(a: np.ndarray, b: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(N, WIDTH) uint8 hashes of a and b -> (per size, the Hamming distance of a to b; per size, of
    a to b's mirror image), each (N,) int32."""
    same, flip, at = [], [], 0
    for size in SIZES:
        k = size * size // 8
        ha, hb, hm = a[:, at : at + k], b[:, at : at + k], b[:, at + k : at + 2 * k]
        same.append(bits(ha, hb))
        flip.append(bits(ha, hm))
        at += 2 * k
    return same, flip


def as_bytes(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """An image_hash column -> ((N, WIDTH) uint8, (N,) bool valid); null rows are zeros."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    if n == 0 or col.null_count == n or col.type != IMAGE_HASH:  # none, or a hash of an older layout
        return np.zeros((n, WIDTH), np.uint8), np.zeros(n, bool)
    out = np.frombuffer(col.buffers()[1], np.uint8, count=(col.offset + n) * WIDTH).reshape(-1, WIDTH)[col.offset:]
    valid = np.asarray(col.is_valid())
    return np.where(valid[:, None], out, 0).astype(np.uint8), valid


BANDS = (22, 21, 21)  # the 64-bit hash in three bands: two hashes within 2 bits share one of them


def band_keys(h: np.ndarray) -> np.ndarray:
    """(N, WIDTH) uint8 hashes -> (N, 2 x len(BANDS)) int64 keys: band j of the photo's 64-bit hash
    and band j of its mirror image's, each tagged with j. A copy of the photo (within
    dedup.COPY_BITS[0] = 2 bits of it, either way round) shares at least one key with it."""
    v = np.ascontiguousarray(h[:, :16]).view(">u8").astype(np.uint64)  # (N, 2): the photo's, the mirror's
    out, shift = np.empty((len(h), 2, len(BANDS)), np.int64), 64
    for j, width in enumerate(BANDS):
        shift -= width
        out[:, :, j] = (np.int64(j) << 32) | ((v >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
    return out.reshape(len(h), -1)
