"""A fuzzed crawl from real photos, shared by tests/test_fuzz.py (300 files, in CI) and bench/fuzz.py
(10,000 and more): every file is a real photo put through one to three mutations - bit flips,
truncations, header garbage, splices of two photos, zero runs, wrong extensions, absurd header
dimensions, CMYK / 16-bit / palette / alpha / 1-bit modes, EXIF orientations (valid and not),
animated GIF and WebP, TIFF / BMP / WebP containers, polyglots (a JPEG with a ZIP or HTML
around it), empty and non-image files, decompression bombs - filed in identity folders."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _jpeg(img: Image.Image, **kw) -> bytes:
    return _save(img.convert("RGB"), "JPEG", quality=85, **kw)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# -- byte mutations -------------------------------------------------------------------------------
def bitflip(b: bytes, rng) -> bytes:
    a = bytearray(b)
    for i in rng.integers(0, len(a), int(rng.integers(1, 64))):
        a[i] ^= 1 << int(rng.integers(8))
    return bytes(a)


def truncate(b: bytes, rng) -> bytes:
    return b[: int(rng.integers(0, max(len(b), 1)))]


def header_garbage(b: bytes, rng) -> bytes:
    n = int(rng.integers(1, 64))
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes() + b[n:]


def zero_run(b: bytes, rng) -> bytes:
    a = bytearray(b)
    i = int(rng.integers(0, max(len(a), 1)))
    a[i:i + int(rng.integers(1, 4096))] = b"\0" * len(a[i:i + 4096])
    return bytes(a[: len(b)])


def absurd_jpeg_size(b: bytes, rng) -> bytes:
    """The SOF marker's height and width set to 65535 (or 0)."""
    a = bytearray(b)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = a.find(marker)
        if i > 0:
            v = int(rng.choice([0, 65535, 1]))
            a[i + 5:i + 9] = struct.pack(">HH", v, 65535 - v)
    return bytes(a)


BYTE_MUTATIONS = (bitflip, truncate, header_garbage, zero_run, absurd_jpeg_size)


# kind -> (conversion, container, extension, save options): the photo re-saved as crawls hold them
RESAVED = {
    0: ({"mode": "CMYK"}, "JPEG", ".jpg", {"quality": 85}),
    1: ({"mode": "I;16"}, "PNG", ".png", {}),
    2: ({"mode": "P", "palette": Image.ADAPTIVE}, "PNG", ".png", {}),
    3: ({"mode": "RGBA"}, "PNG", ".png", {}),
    4: ({"mode": "1"}, "PNG", ".png", {}),
    5: ({"mode": "LA"}, "PNG", ".png", {}),
    9: ({"mode": "RGB"}, "TIFF", ".tif", {}),
    10: ({"mode": "RGB"}, "BMP", ".bmp", {}),
    11: ({"mode": "RGB"}, "WEBP", ".webp", {}),
}


# -- whole files --------------------------------------------------------------------------------
def made(photo: Image.Image, other: Image.Image, rng) -> tuple[bytes, str]:
    """One file made from real photos: (bytes, extension)."""
    kind = int(rng.integers(0, 22))
    small = photo.resize((max(8, photo.width // 2), max(8, photo.height // 2)))
    if kind in RESAVED:  # the photo in another mode or container
        conversion, fmt, ext, kw = RESAVED[kind]
        return _save(photo.convert(**conversion), fmt, **kw), ext
    if kind == 6:  # EXIF orientation 0..9 (1-8 valid)
        exif = Image.Exif()
        exif[0x0112] = int(rng.integers(0, 10))
        return _jpeg(photo, exif=exif.tobytes()), ".jpg"
    if kind == 7:
        frames = [small.convert("P"), other.resize(small.size).convert("P")]
        return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0), ".gif"
    if kind == 8:
        frames = [small.convert("RGB"), other.resize(small.size).convert("RGB")]
        return _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100), ".webp"
    if kind == 12:  # a JPEG with a ZIP appended (a polyglot)
        z = io.BytesIO()
        with zipfile.ZipFile(z, "w") as f:
            f.writestr("readme.txt", "not a face")
        return _jpeg(photo) + z.getvalue(), ".jpg"
    if kind == 13:  # HTML around a JPEG
        return b"<html><body>" + _jpeg(small) + b"</body></html>", ".jpg"
    if kind == 14:  # two photos spliced
        a, b = _jpeg(photo), _jpeg(other)
        return a[: len(a) // 2] + b[len(b) // 2:], ".jpg"
    if kind == 15:  # wrong extensions
        return (_save(photo.convert("RGB"), "PNG"), ".jpg") if rng.random() < 0.5 else (_jpeg(photo), ".png")
    if kind == 16:
        return b"", ".jpg"
    if kind == 17:
        return rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes(), ".jpg"
    if kind == 18:
        return b"name,identity\nnot,an image\n", rng.choice([".jpg", ".csv", ".txt"])
    if kind == 19:  # a decompression bomb: a huge, highly compressed PNG
        side = int(rng.choice([20000, 40000]))
        raw = zlib.compress(b"\0" * (side + 1) * 64, 9)
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", raw) + _png_chunk(b"IEND", b""), ".png"
    if kind == 20:  # an absurd PNG size with a valid CRC
        png = bytearray(_save(small.convert("RGB"), "PNG"))
        ihdr = struct.pack(">II", 2**31 - 1, int(rng.integers(0, 3)) * 2**30) + bytes(png[24:29])
        png[8:33] = _png_chunk(b"IHDR", ihdr)
        return bytes(png), ".png"
    return _jpeg(photo), ".jpg"


def fuzzed_crawl(photos: list[Image.Image], root: str, n: int, seed: int = 0, identities: int = 50) -> list[str]:
    """n fuzzed files under root/<identity>/; returns their paths relative to root. A file is a
    made file (above) put through zero to three byte mutations."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        a, b = (photos[int(k)] for k in rng.integers(0, len(photos), 2))
        data, ext = made(a, b, rng)
        for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):
            if data:
                data = BYTE_MUTATIONS[int(rng.integers(len(BYTE_MUTATIONS)))](data, rng)
        rel = os.path.join(f"id{int(rng.integers(identities)):03d}", f"f{i:06d}{ext}")
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
        paths.append(rel)
    return paths


def photos_from(folder: str, limit: int = 200) -> list[Image.Image]:
    """Real photos from a folder tree (a sample crawl, ../shared/data/faces)."""
    out = []
    for dirpath, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            try:
                with Image.open(os.path.join(dirpath, name)) as im:
                    out.append(im.convert("RGB").copy())
            except Exception:  # noqa: BLE001 - the sample crawl holds deliberate non-images
                continue
            if len(out) >= limit:
                return out
    return out
