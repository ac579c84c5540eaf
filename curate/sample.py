"""A small real crawl built from face photos that installed packages ship.

Sources: scikit-image's ``astronaut`` (Eileen Collins), ``camera`` (a man, no frontal face),
``chelsea`` (a cat) and ``lfw_subset`` (25x25 LFW crops); insightface's ``Tom_Hanks_54745.png`` and
``t1.jpg`` (a group photo of six people, each cropped out as an identity). Each identity gets
seeded variants (flip, scale, crop, rotation, exposure, grayscale, JPEG quality, EXIF orientation),
as a web crawl holds the same person in many photos. Noise a real crawl has is added on purpose: a
cat filed under a person, a group photo, a truncated JPEG, HTML saved as .jpg, a zero-byte file,
and two label swaps (``zz_swap_<who>.jpg``: another person's face filed under this identity).
A bounded slice of ``shared_data`` (identity folders, when present: 12 people, 8 photos each, and
one more label swap) is copied in too.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from curate.io.sources import IMAGE_EXT

# Face boxes in insightface's t1.jpg (dlib HOG, x1, y1, x2, y2).
_T1_FACES = [(67, 283, 175, 390), (275, 176, 364, 265), (450, 295, 557, 402),
             (724, 367, 832, 474), (870, 67, 999, 196), (1118, 283, 1226, 390)]


def shared_faces() -> Path:
    """``../shared/data/faces`` beside the checkout (real faces, one folder per person), or
    $FACECURATE_FACES; it may be absent."""
    return Path(os.environ.get("FACECURATE_FACES") or Path(__file__).resolve().parents[2] / "shared" / "data" / "faces")


def _insightface_image(name: str) -> Image.Image | None:
    from models.vendor import import_vendored

    try:
        insightface = import_vendored("insightface")
    except ImportError:
        return None
    p = Path(insightface.__file__).parent / "data" / "images" / name
    return Image.open(p).convert("RGB") if p.exists() else None


def base_photos() -> dict[str, Image.Image]:
    """identity -> one real photo of that person."""
    from skimage import data

    photos = {"eileen_collins": Image.fromarray(data.astronaut())}
    hanks = _insightface_image("Tom_Hanks_54745.png")
    if hanks is not None:
        photos["tom_hanks"] = hanks.resize((224, 224), Image.BICUBIC)
    t1 = _insightface_image("t1.jpg")
    if t1 is not None:
        for k, (x1, y1, x2, y2) in enumerate(_T1_FACES):
            cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 1.3 * (x2 - x1)
            box = tuple(int(v) for v in (max(cx - half, 0), max(cy - half, 0), cx + half, cy + half))
            photos[f"t1_person_{k}"] = t1.crop(box)
    return photos


def variant(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """A seeded re-photographed look of ``img``; returns the image and save options."""
    w, h = img.size
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    m = rng.uniform(0.0, 0.12)  # random crop keeping the face
    img = img.crop((int(w * rng.uniform(0, m)), int(h * rng.uniform(0, m)),
                    int(w * (1 - rng.uniform(0, m))), int(h * (1 - rng.uniform(0, m)))))
    img = img.rotate(rng.uniform(-12, 12), resample=Image.BICUBIC, expand=False)
    s = rng.uniform(0.7, 1.6)
    img = img.resize((max(int(img.width * s), 32), max(int(img.height * s), 32)), Image.BICUBIC)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    if rng.random() < 0.15:
        img = ImageOps.grayscale(img)
    return img, {"quality": int(rng.integers(60, 96))}


def _save(img: Image.Image, path: Path, rng: np.random.Generator, quality: int = 90) -> None:
    if rng.random() < 0.15:  # stored rotated with an EXIF orientation tag that undoes it
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 CW to display
        img.rotate(90, expand=True).save(path, "JPEG", quality=quality, exif=exif)
    elif rng.random() < 0.1:
        img.save(path.with_suffix(".png"), "PNG")
    else:
        img.save(path, "JPEG", quality=quality)


def build_sample_crawl(dest: str, variants: int = 6, seed: int = 0, shared_data: str | None = None,
                       noise: bool = True) -> int:
    """Write ``dest/identity/*.jpg``; returns the number of files written."""
    from skimage import data

    rng = np.random.default_rng(seed)
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    photos = base_photos()
    for identity, photo in photos.items():
        d = root / identity
        d.mkdir(exist_ok=True)
        photo.save(d / "000_original.jpg", "JPEG", quality=95)
        n += 1
        for v in range(1, variants + 1):
            img, opts = variant(photo, rng)
            _save(img, d / f"{v:03d}.jpg", rng, opts["quality"])
            n += 1
    if noise:
        d = root / "eileen_collins"
        Image.fromarray(data.chelsea()).save(d / "zz_cat.jpg", "JPEG")  # label noise: not a person
        t1 = _insightface_image("t1.jpg")
        if t1 is not None:
            t1.save(root / "tom_hanks" / "zz_group.jpg", "JPEG")  # several faces, none labelled
        (root / "cameraman").mkdir(exist_ok=True)
        Image.fromarray(data.camera()).save(root / "cameraman" / "000.png")  # a profile, alone under its label
        lfw = (data.lfw_subset()[:3] * 255).astype(np.uint8)
        (root / "lfw_small").mkdir(exist_ok=True)
        for k, face in enumerate(lfw):  # 25x25 thumbnails of three different people under one label
            Image.fromarray(face).save(root / "lfw_small" / f"{k:03d}.png")
        buf = io.BytesIO()
        Image.fromarray(data.astronaut()).save(buf, "JPEG")
        (d / "zz_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
        (d / "zz_page.jpg").write_text("<html><body>404 Not Found</body></html>")
        (d / "zz_empty.jpg").write_bytes(b"")
        n += 8 + (t1 is not None)
        # label swaps: a real face of another person filed under this identity
        for into, other in (("eileen_collins", "tom_hanks"), ("t1_person_2", "t1_person_4")):
            if into in photos and other in photos:
                img, opts = variant(photos[other], rng)
                img.convert("RGB").save(root / into / f"zz_swap_{other}.jpg", "JPEG", quality=opts["quality"])
                n += 1
    if shared_data and os.path.isdir(shared_data):
        n += _copy_shared(Path(shared_data), root)
    return n


def _copy_shared(src: Path, root: Path, identities: int = 12, per_identity: int = 8) -> int:
    """A bounded real slice of ``src`` (identity folders, e.g. ../shared/data/faces): ``identities``
    folders spread evenly over the sorted list (lab and web sources alike), up to ``per_identity``
    photos each, plus one label swap (the last chosen person's photo filed under the first)."""
    folders = sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        return 0
    step = max(len(folders) // identities, 1)
    chosen = folders[::step][:identities]
    n = 0
    for d in chosen:
        photos = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT)
        dest = root / f"shared_{d.name}"
        dest.mkdir(exist_ok=True)
        for p in photos[:per_identity]:
            (dest / p.name).write_bytes(p.read_bytes())
            n += 1
    if len(chosen) >= 2:
        extra = sorted(p for p in chosen[-1].iterdir() if p.suffix.lower() in IMAGE_EXT)
        if extra:
            swap = extra[-1]
            (root / f"shared_{chosen[0].name}" / f"zz_swap_{chosen[-1].name}{swap.suffix.lower()}").write_bytes(swap.read_bytes())
            n += 1
    return n
