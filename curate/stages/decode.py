"""decode: raw bytes -> RGB pixels, with a stable image_id. Never raises on bad input.

Reads ``item, source, identity, data, reason, reason_detail`` (from a Source's fetch) and adds
``image_id, sha1, n_bytes, format, mode, width, height, pixels``. ``pixels`` is uint8 RGB,
row-major (height, width, 3), EXIF orientation applied, alpha composited on white, 16-bit and
float images scaled to 8 bits. Rows that fail get ``reason`` set and null ``pixels``.
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError

from curate.config import DecodeConfig
from curate.schema import Reason, require
from curate.stages.phash import IMAGE_HASH, image_hash

READS = ("item", "source", "identity", "data", "reason", "reason_detail")


def image_id(source: str, sha1: str | None) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(source.encode("utf-8", "surrogateescape"))
    h.update(b"\0" + (sha1 or "").encode())
    return h.hexdigest()


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(a.max()), 1.0)
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"))


def decode_one(data: bytes, cfg: DecodeConfig) -> tuple[np.ndarray | None, dict]:
    """-> (pixels or None, metadata incl. reason/reason_detail on failure)."""
    meta: dict = {}
    if len(data) > cfg.max_bytes:
        return None, {"reason": Reason.TOO_LARGE.value, "reason_detail": f"{len(data)} bytes"}
    if not data:
        return None, {"reason": Reason.DECODE_ERROR.value, "reason_detail": "zero bytes"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            meta["format"], meta["mode"] = im.format, im.mode
            w, h = im.size
            if w * h > cfg.max_pixels:
                return None, meta | {"reason": Reason.TOO_LARGE.value, "reason_detail": f"{w}x{h} pixels"}
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animated/multi-page: the first frame is the image
            im.load()
            im = ImageOps.exif_transpose(im)
            pixels = _to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return None, meta | {"reason": Reason.TOO_LARGE.value, "reason_detail": str(exc)[:200]}
    except UnidentifiedImageError:
        return None, meta | {"reason": Reason.DECODE_ERROR.value, "reason_detail": "not an image"}
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error ... on corrupt files
        return None, meta | {"reason": Reason.DECODE_ERROR.value, "reason_detail": f"{type(exc).__name__}: {exc}"[:200]}
    h, w = pixels.shape[:2]
    meta |= {"width": w, "height": h}
    if min(w, h) < cfg.min_side:
        return None, meta | {"reason": Reason.TOO_SMALL_IMAGE.value, "reason_detail": f"{w}x{h}"}
    return np.ascontiguousarray(pixels), meta


def decode(batch: pa.Table, cfg: DecodeConfig) -> pa.Table:
    require(batch, READS, "decode")
    cols = {k: [] for k in ("image_id", "sha1", "n_bytes", "format", "mode", "width", "height", "pixels", "image_hash")}
    reasons = batch["reason"].to_pylist()
    details = batch["reason_detail"].to_pylist()
    for i, (source, data) in enumerate(zip(batch["source"].to_pylist(), batch["data"].to_pylist())):
        sha1 = hashlib.sha1(data).hexdigest() if data is not None else None
        pixels, meta = (None, {}) if data is None else decode_one(data, cfg)
        if data is not None and pixels is None:
            reasons[i], details[i] = meta["reason"], meta["reason_detail"]
        cols["image_id"].append(image_id(source, sha1))
        cols["sha1"].append(sha1)
        cols["n_bytes"].append(None if data is None else len(data))
        for k in ("format", "mode", "width", "height"):
            cols[k].append(meta.get(k))
        cols["pixels"].append(None if pixels is None else pixels.tobytes())
        cols["image_hash"].append(None if pixels is None else image_hash(pixels))
    out = batch.drop_columns(["data", "reason", "reason_detail"])
    types = {"n_bytes": pa.int64(), "width": pa.int32(), "height": pa.int32(), "pixels": pa.large_binary(),
             "image_hash": IMAGE_HASH}
    for k, v in cols.items():
        out = out.append_column(k, pa.array(v, types.get(k, pa.string())))
    return out.append_column("reason", pa.array(reasons, pa.string())).append_column(
        "reason_detail", pa.array(details, pa.string())
    )


def pixels_of(table: pa.Table, i: int) -> np.ndarray | None:
    """Row i's decoded image as a (height, width, 3) uint8 view, or None."""
    buf = table["pixels"][i].as_buffer()
    if buf is None:
        return None
    h, w = table["height"][i].as_py(), table["width"][i].as_py()
    return np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
