"""Real face data from ../shared/data, when a person has put some there (skips cleanly otherwise)."""

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
pytestmark = pytest.mark.shared_data


def shared_images(limit=20):
    if not SHARED_DATA.is_dir():
        return []
    return [p for p in sorted(SHARED_DATA.rglob("*")) if p.suffix.lower() in IMAGE_EXT][:limit]


@pytest.mark.skipif(not shared_images(), reason="no ../shared/data images")
def test_shared_images_decode_and_most_have_a_face(dlib_models):
    from curate.config import DecodeConfig
    from curate.stages.decode import decode_one

    found = 0
    paths = shared_images()
    for p in paths:
        pixels, meta = decode_one(p.read_bytes(), DecodeConfig())
        if pixels is None:
            continue
        found += len(dlib_models.detector.detect(pixels)) > 0
    assert found >= len(paths) // 2, f"faces in {found} of {len(paths)} shared images"
