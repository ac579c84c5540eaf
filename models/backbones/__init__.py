"""Backbones for 112x112 aligned faces, registered by name. Each maps (B, 3, 112, 112) float
input, RGB scaled as (x - 127.5) / 127.5, to (B, D) raw embeddings *before* L2 normalisation, so
the feature norm (the MagFace/AdaFace quality signal) is available to heads and to the pipeline."""

from models.registry import Registry

BACKBONES = Registry("backbone")


def build_backbone(name: str, embedding_size: int = 512, **kwargs):
    return BACKBONES.build(name, embedding_size=embedding_size, **kwargs)


from models.backbones import iresnet, mobilefacenet  # noqa: E402,F401  (registration)
