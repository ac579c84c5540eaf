import io
import struct
import zlib

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curate.config import DecodeConfig
from curate.io.sources import FETCHED
from curate.stages.decode import decode, decode_one, image_id, pixels_of

CFG = DecodeConfig()


def encode(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h (a decompression bomb's calling card) with no real data."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


GRAD = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))  # 48 x 64


@pytest.mark.parametrize("name,data,check", [
    ("gray", encode(Image.fromarray(GRAD)), lambda p: (p[..., 0] == p[..., 2]).all() and p[0, 63, 0] == 252),
    ("rgba on white", encode(Image.new("RGBA", (64, 48), (0, 0, 0, 0))), lambda p: (p == 255).all()),
    ("palette+transparency", encode(Image.new("P", (64, 48), 0), transparency=0), lambda p: (p == 255).all()),
    ("cmyk jpeg", encode(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG"), lambda p: p[..., 0].mean() > 200 and p[..., 1].mean() < 60),
    ("16-bit", encode(Image.fromarray((GRAD.astype(np.uint16) * 257))), lambda p: p[0, 63, 0] == 252),
    ("bmp", encode(Image.fromarray(np.dstack([GRAD] * 3)), "BMP"), lambda p: p.shape == (48, 64, 3)),
])
def test_pixel_modes_become_rgb_uint8(name, data, check):
    pixels, meta = decode_one(data, CFG)
    assert pixels is not None, meta
    assert pixels.dtype == np.uint8 and pixels.shape == (48, 64, 3) and check(pixels), name


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (64, 32), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    pixels, meta = decode_one(encode(img, "JPEG", exif=exif), CFG)
    assert pixels.shape == (64, 32, 3) and (meta["width"], meta["height"]) == (32, 64)


def test_animated_gif_takes_first_frame():
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    pixels, meta = decode_one(buf.getvalue(), CFG)
    assert meta["format"] == "GIF" and pixels[..., 0].mean() > 200 and pixels[..., 2].mean() < 50


@pytest.mark.parametrize("data,reason,detail", [
    (b"", "decode_error", "zero bytes"),
    (b"<html>404</html>", "decode_error", "not an image"),
    (encode(Image.new("RGB", (200, 200), (9, 9, 9)), "JPEG")[:300], "decode_error", "Truncated"),
    (encode(Image.new("RGB", (200, 200), (9, 9, 9)), "JPEG")[:650], "decode_error", "truncated"),
    (png_header_only(20000, 20000), "too_large", "decompression bomb"),
    (png_header_only(9000, 9000), "too_large", "9000x9000"),  # over our own 64 Mpx limit, under PIL's
    (encode(Image.new("RGB", (1, 1))), "too_small_image", "1x1"),
])
def test_bad_inputs_get_reasons_not_exceptions(data, reason, detail):
    pixels, meta = decode_one(data, CFG)
    assert pixels is None and meta["reason"] == reason and detail in meta["reason_detail"]


def test_decode_table_keeps_every_row_and_fetch_reasons():
    good = encode(Image.new("RGB", (32, 32), (1, 2, 3)))
    t = pa.table({"item": [0, 1, 2], "source": ["a.png", "b.png", "c.png"], "identity": ["x", "x", "y"],
                  "data": [good, None, b"junk"], "reason": [None, "read_error", None],
                  "reason_detail": [None, "gone", None], "resolved_path": [None] * 3}, schema=FETCHED)
    out = decode(t, CFG)
    assert out["reason"].to_pylist() == [None, "read_error", "decode_error"]
    assert out["reason_detail"].to_pylist()[1] == "gone"
    assert pixels_of(out, 0).shape == (32, 32, 3) and pixels_of(out, 1) is None
    assert out["sha1"][1].as_py() is None and len(out["sha1"][0].as_py()) == 40
    # ids: stable, depend on source and bytes
    assert out["image_id"][0].as_py() == image_id("a.png", out["sha1"][0].as_py())
    assert len(set(out["image_id"].to_pylist())) == 3
    assert decode(t, CFG)["image_id"].to_pylist() == out["image_id"].to_pylist()
