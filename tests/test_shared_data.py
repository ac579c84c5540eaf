"""Real face data from ../shared/data, when a person has put some there (skips cleanly otherwise)."""

import numpy as np
import pytest
from conftest import SHARED_DATA

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
pytestmark = pytest.mark.shared_data
FACES = SHARED_DATA / "faces"


def per_source(k: int = 3) -> list:
    """The first k photos of the first identity of every source (lab sets and web photos)."""
    if not FACES.is_dir():
        return []
    firsts = {}
    for d in sorted(p for p in FACES.iterdir() if p.is_dir()):
        firsts.setdefault(d.name.split("__")[0], d)
    return [p for d in firsts.values() for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXT][: k * len(firsts)]


@pytest.mark.skipif(not per_source(), reason="no ../shared/data/faces")
@pytest.mark.parametrize("detector", ["yunet", "scrfd"])
def test_registry_detectors_find_every_face_in_every_source(default_models, detector):
    """Lab crops (ORL 92x112, Yale B lit from the side) and web photos alike: the per-image input
    size and the second pass find the face dlib's HOG missed in 30% of these photos."""
    from curate.config import DecodeConfig
    from curate.stages.decode import decode_one
    from models import DETECTORS

    det = default_models.detector if detector == "yunet" else DETECTORS.build(detector, threads=2)
    paths = per_source()
    imgs = [decode_one(p.read_bytes(), DecodeConfig())[0] for p in paths]
    found = det.detect_batch([i for i in imgs if i is not None])
    missed = [str(p.relative_to(FACES)) for p, f in zip(paths, found) if not len(f)]
    assert missed == []
    assert all(np.isfinite(f.landmarks).all() for f in found)
