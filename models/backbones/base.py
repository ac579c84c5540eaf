"""The backbones' registry (models.backbones documents the backbones)."""

from models.registry import Registry

BACKBONES = Registry("backbone")


def build_backbone(name: str, embedding_size: int = 512, **kwargs):
    return BACKBONES.build(name, embedding_size=embedding_size, **kwargs)
