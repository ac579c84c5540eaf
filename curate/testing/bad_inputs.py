"""Generators for the bad-input corpus: every kind of broken, odd or hostile input a web crawl
holds, made on the fly (no stored binaries). ``build(root)`` writes

    root/crawl/<identity>/<file>      a folder crawl with one file per kind (plus links)
    root/msceleb.tsv                  MS-Celeb TSV lines: good, corrupt base64, wrong column count
    root/train.rec + train.idx        RecordIO: good records, bad magic, offsets past the end
    root/manifest/manifest.parquet    a manifest: path traversal, absolute paths, duplicates, labels
    root/crawl.tar                    a tar: '../' and absolute member names, link members, long names

and returns ``{input path: {source: (allowed reasons, detail substring or None)}}``.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

FACE_OK = {"ok"}
DECODED = {"ok", "no_face", "too_small", "multi_face_ambiguous", "low_det_score"}  # decoding is the point


def face(size: int = 300) -> Image.Image:
    """A real face photo that installed packages ship (scikit-image's astronaut), cropped to the head."""
    from skimage import data

    im = Image.fromarray(data.astronaut()).crop((130, 10, 330, 210))
    return im.resize((size, size))


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels (IHDR) with almost no data: the decompression-bomb header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def folder_kinds() -> dict[str, tuple[bytes, set[str], str | None]]:
    """name -> (file bytes, allowed reasons, detail substring)."""
    f = face()
    jpg = _bytes(f, "JPEG", quality=90)
    png = _bytes(f, "PNG")
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (200, 200, 3), np.uint8))
    # EXIF orientation 6 (rotate 90 CW to view): stored sideways, viewed upright
    exif = Image.Exif()
    exif[0x0112] = 6
    portrait = Image.new("RGB", (300, 420), (90, 90, 90))
    portrait.paste(f, (0, 60))
    sideways = _bytes(portrait.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes())  # stored 420x300
    frames = [f, f.transpose(Image.Transpose.FLIP_LEFT_RIGHT), noise.resize((300, 300))]
    gif_anim = io.BytesIO()
    frames[0].save(gif_anim, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    tiff_multi = io.BytesIO()
    frames[0].save(tiff_multi, "TIFF", save_all=True, append_images=frames[1:])
    pal = f.convert("RGBA")
    pal.putalpha(Image.new("L", f.size, 200))
    group = Image.new("RGB", (600, 600), (128, 128, 128))
    for x, y in ((0, 0), (300, 0), (0, 300), (300, 300)):
        group.paste(f, (x, y))
    tiny = Image.new("RGB", (800, 800), (120, 120, 120))
    tiny.paste(f.resize((30, 30)), (400, 400))
    i16 = Image.fromarray(np.asarray(f.convert("L"), np.uint16) * 257)  # 16-bit gray (I;16)
    return {
        "zero_byte.jpg": (b"", {"decode_error"}, "zero bytes"),
        "truncated.jpg": (jpg[: len(jpg) // 3], {"decode_error"}, None),
        "truncated.png": (png[: len(png) // 2], {"decode_error"}, None),
        "png_named.jpg": (png, FACE_OK, None),
        "text.jpg": (b"just some text, not an image\n" * 20, {"decode_error"}, "not an image"),
        "page.jpg": (b"<!doctype html><html><body>404 Not Found</body></html>", {"decode_error"}, "not an image"),
        "elf.jpg": (b"\x7fELF\x02\x01\x01" + bytes(200), {"decode_error"}, "not an image"),
        "svg.jpg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', {"decode_error"}, None),
        "bad_crc.png": (png[:40] + bytes([png[40] ^ 0xFF]) + png[41:], {"decode_error"} | DECODED, None),
        "still.gif": (_bytes(f, "GIF"), DECODED, None),
        "animated.gif": (gif_anim.getvalue(), DECODED, None),
        "multipage.tiff": (tiff_multi.getvalue(), FACE_OK, None),
        "cmyk.jpg": (_bytes(f.convert("CMYK"), "JPEG"), FACE_OK, None),
        "gray16.png": (_bytes(i16, "PNG"), DECODED, None),
        "palette_alpha.png": (_bytes(pal.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0), DECODED, None),
        "rgba.png": (_bytes(pal, "PNG"), FACE_OK, None),
        "exif_rotated.jpg": (sideways, FACE_OK, None),
        "grayscale.jpg": (_bytes(f.convert("L"), "JPEG"), FACE_OK, None),
        "webp.webp": (_bytes(f, "WEBP"), FACE_OK, None),
        "bmp.bmp": (_bytes(f, "BMP"), FACE_OK, None),
        "one_pixel.png": (_bytes(Image.new("RGB", (1, 1)), "PNG"), {"too_small_image"}, "1x1"),
        "bomb.png": (_png_header_only(20000, 20000), {"too_large"}, "pixels"),
        "huge_file.jpg": (jpg + bytes(3_000_000), {"too_large"}, "bytes"),
        "no_face.jpg": (_bytes(noise, "JPEG"), {"no_face"}, None),
        "many_faces.jpg": (_bytes(group, "JPEG"), {"multi_face_ambiguous"}, None),
        "tiny_face.jpg": (_bytes(tiny, "JPEG"), {"no_face", "too_small"}, None),
        "good.jpg": (jpg, FACE_OK, None),
    }


def build(root: str, max_bytes: int = 2_000_000) -> dict[str, dict[str, tuple[set[str], str | None]]]:
    os.makedirs(root, exist_ok=True)
    crawl = os.path.join(root, "crawl")
    expect: dict[str, dict] = {}
    # -- folders ---------------------------------------------------------------------------
    fx = {}
    for ident in ("person", "Zoë Saldaña", "m.0abc12"):
        os.makedirs(os.path.join(crawl, ident), exist_ok=True)
    for name, (data, reasons, detail) in folder_kinds().items():
        with open(os.path.join(crawl, "person", name), "wb") as fh:
            fh.write(data)
        fx[f"person/{name}"] = (reasons, detail)
    good = os.path.join(crawl, "person", "good.jpg")
    with open(os.path.join(crawl, "Zoë Saldaña", "unicode_label.jpg"), "wb") as fh:
        fh.write(open(good, "rb").read())
    fx["Zoë Saldaña/unicode_label.jpg"] = (FACE_OK | {"duplicate"}, None)
    with open(os.path.join(crawl, "m.0abc12", "same_bytes_twice.jpg"), "wb") as fh:
        fh.write(open(good, "rb").read())
    fx["m.0abc12/same_bytes_twice.jpg"] = (FACE_OK | {"duplicate"}, None)
    os.symlink(good, os.path.join(crawl, "m.0abc12", "link_inside.jpg"))
    fx["m.0abc12/link_inside.jpg"] = (FACE_OK | {"duplicate"}, None)
    secret = os.path.join(root, "outside_secret.jpg")
    with open(secret, "wb") as fh:
        fh.write(open(good, "rb").read())
    os.symlink(secret, os.path.join(crawl, "person", "link_outside.jpg"))
    fx["person/link_outside.jpg"] = (FACE_OK | {"duplicate"}, None)  # a link is followed wherever it points
    os.symlink("/etc/passwd", os.path.join(crawl, "person", "link_passwd.jpg"))
    fx["person/link_passwd.jpg"] = ({"decode_error"}, "not an image")
    os.symlink(os.path.join(crawl, "person", "missing.jpg"), os.path.join(crawl, "person", "dangling.jpg"))
    fx["person/dangling.jpg"] = ({"read_error"}, None)
    with open(os.path.join(crawl, "root_level.jpg"), "wb") as fh:  # no identity folder
        fh.write(open(good, "rb").read())
    fx["root_level.jpg"] = ({"no_identity"}, None)
    unreadable = os.path.join(crawl, "person", "unreadable.jpg")
    with open(unreadable, "wb") as fh:
        fh.write(open(good, "rb").read())
    os.chmod(unreadable, 0)
    # root reads anything: then it is just a good file
    fx["person/unreadable.jpg"] = ({"read_error"} | (FACE_OK | {"duplicate"} if os.geteuid() == 0 else set()), None)
    expect[crawl] = fx
    # -- TSV -------------------------------------------------------------------------------
    b64 = base64.b64encode(open(good, "rb").read())
    lines = [
        (b"m.01\t0\t" + b64, FACE_OK),
        (b"m.02\t0\t!!!not-base64!!!", {"read_error"}),
        (b"m.03\t" + b64, {"read_error"}),  # wrong column count
        (b"m.04\t0\t" + base64.b64encode(b"<html>not an image</html>"), {"decode_error"}),
        (b"m.05\t0\t" + b64[: len(b64) // 2], {"read_error", "decode_error"}),  # cut mid-stream
        (b"\t0\t" + b64, {"no_identity"}),
    ]
    tsv = os.path.join(root, "msceleb.tsv")
    tx, pos = {}, 0
    with open(tsv, "wb") as fh:
        for line, reasons in lines:
            tx[f"msceleb.tsv@{pos}"] = (reasons, None)
            fh.write(line + b"\n")
            pos += len(line) + 1
    expect[tsv] = tx
    # -- RecordIO ----------------------------------------------------------------------------
    from curate.io import recordio

    rec, idx = os.path.join(root, "train.rec"), os.path.join(root, "train.idx")
    jpg = open(good, "rb").read()
    with recordio.RecordIOWriter(rec, idx) as w:
        w.write(1, recordio.pack(recordio.IRHeader(0, 7.0, 1, 0), jpg))
        w.write(2, recordio.pack(recordio.IRHeader(0, 7.0, 2, 0), b"garbage, not a jpeg"))
        w.write(3, b"\x01\x02")  # shorter than its own IRHeader
    size = os.path.getsize(rec)
    with open(rec, "r+b") as fh:  # a 4th record whose magic is corrupt
        fh.seek(size)
        fh.write(struct.pack("<II", 0xDEADBEEF, 8) + b"12345678")
    with open(idx, "a") as fh:
        fh.write(f"4\t{size}\n5\t{size + 10_000}\n6\t3\n")  # bad magic, past the end, mid-record
    expect[rec] = {"train.rec#1": (FACE_OK, None), "train.rec#2": ({"decode_error"}, None),
                   "train.rec#3": ({"read_error"}, "shorter than its header"),
                   "train.rec#4": ({"read_error"}, "bad magic"), "train.rec#5": ({"read_error"}, None),
                   "train.rec#6": ({"read_error"}, None)}
    # -- Parquet manifest --------------------------------------------------------------------
    man = os.path.join(root, "manifest")
    os.makedirs(os.path.join(man, "imgs"))
    with open(os.path.join(man, "imgs", "a.jpg"), "wb") as fh:
        fh.write(jpg)
    rows = [
        ("alice", "imgs/a.jpg", FACE_OK),
        ("alice", "imgs/a.jpg", FACE_OK | {"duplicate"}),  # the same file listed twice
        ("bob", "../../../../etc/passwd", {"read_error"}),
        ("bob", "imgs/../../outside_secret.jpg", {"read_error"}),
        ("carol", "/etc/passwd", {"read_error"}),
        ("carol", "imgs/missing.jpg", {"read_error"}),
        ("../../etc", "imgs/a.jpg", FACE_OK | {"duplicate"}),  # a path-like label is only a label
        ("", "imgs/a.jpg", {"no_identity"}),
        (None, "imgs/a.jpg", {"no_identity"}),
        ("dave", None, {"read_error"}),
    ]
    pq.write_table(pa.table({"identity": [r[0] for r in rows], "path": [r[1] for r in rows]}),
                   os.path.join(man, "manifest.parquet"))
    expect[os.path.join(man, "manifest.parquet")] = {f"manifest.parquet#{i}": (r[2], None) for i, r in enumerate(rows)}
    # -- tar archive -----------------------------------------------------------------------
    import tarfile

    tpath = os.path.join(root, "crawl.tar")

    def member(tar, name, data=b"", kind=tarfile.REGTYPE, link=""):
        info = tarfile.TarInfo(name)
        info.type, info.size, info.linkname = kind, len(data), link
        tar.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(tpath, "w", format=tarfile.GNU_FORMAT) as tar:
        member(tar, "alice", kind=tarfile.DIRTYPE)
        member(tar, "alice/a.jpg", jpg)
        member(tar, "../../etc/passwd", jpg)
        member(tar, "/abs/b.jpg", jpg)
        member(tar, "bob/../../c.jpg", jpg)
        member(tar, "bob/link.jpg", kind=tarfile.SYMTYPE, link="/etc/passwd")
        member(tar, "bob/hard.jpg", kind=tarfile.LNKTYPE, link="alice/a.jpg")
        member(tar, "carol/" + "long_name_" * 20 + ".jpg", jpg)  # GNU long name
        member(tar, "dave/trunc.jpg", jpg[: len(jpg) // 4])
        member(tar, "root.jpg", jpg)
    expect[tpath] = {
        "crawl.tar:alice/a.jpg": (FACE_OK, None),
        "crawl.tar:../../etc/passwd": ({"read_error"}, "unsafe member name"),
        "crawl.tar:/abs/b.jpg": ({"read_error"}, "unsafe member name"),
        "crawl.tar:bob/../../c.jpg": ({"read_error"}, "unsafe member name"),
        "crawl.tar:bob/link.jpg": ({"read_error"}, "not a regular file"),
        "crawl.tar:bob/hard.jpg": ({"read_error"}, "not a regular file"),
        "crawl.tar:carol/" + "long_name_" * 20 + ".jpg": (FACE_OK, None),
        "crawl.tar:dave/trunc.jpg": ({"decode_error"}, None),
        "crawl.tar:root.jpg": ({"no_identity"}, None),
    }
    return expect
