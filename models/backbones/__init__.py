"""Backbones for 112x112 aligned faces, registered by name. Each maps (B, 3, 112, 112) float
input, RGB scaled as (x - 127.5) / 127.5, to (B, D) raw embeddings *before* L2 normalisation, so
the feature norm (the MagFace/AdaFace quality signal) is available to heads and to the pipeline."""

from models.backbones import iresnet, mobilefacenet  # noqa: F401  (registration)
from models.backbones.base import BACKBONES, build_backbone  # noqa: F401
