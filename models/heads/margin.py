"""Normalised softmax, CosFace, ArcFace and the combined margin s*(cos(m1*theta + m2) - m3).

Large angles: cos(m1*theta + m2) stops decreasing once m1*theta + m2 > pi. Past that point
(cos theta <= th = cos((pi - m2)/m1)) the target becomes cos theta - m2*sin(m2) - m3 (insightface's
"th/mm" fallback), which keeps the target monotone in theta with gradient 1 in cos theta. At the
boundary the value steps down by m2*sin(m2) + cos(m2) - 1 (0.117 for m2 = 0.5), never up. With
``easy_margin`` (MagFace's choice) the margin applies only where cos theta > 0 instead.
"""

from __future__ import annotations

import math

import torch

from models.heads.base import HEADS, MarginHead

EPS = 1e-6


def arc(cos: torch.Tensor, m1: float, m2: float) -> torch.Tensor:
    """cos(m1*theta + m2) from cos theta, exact near cos theta = 1 and with finite gradients at +-1."""
    if m1 == 1.0:  # cos(theta + m) = cos*cos(m) - sin*sin(m); the clamp zeroes d sin at theta = 0
        sin = torch.sqrt((1.0 - cos * cos).clamp(min=1e-12))
        return cos * math.cos(m2) - sin * math.sin(m2)
    theta = torch.acos(cos.clamp(-1 + EPS, 1 - EPS))
    return torch.cos(m1 * theta + m2)


class CombinedMargin(MarginHead):
    def __init__(self, embedding_size, num_classes, s=64.0, m1=1.0, m2=0.5, m3=0.0, easy_margin=False, **kw):
        super().__init__(embedding_size, num_classes, s=s, **kw)
        self.m1, self.m2, self.m3, self.easy_margin = m1, m2, m3, easy_margin
        # beyond this cosine, m1*theta + m2 > pi
        self.th = math.cos(min((math.pi - m2) / m1, math.pi)) if m1 > 0 else -1.0
        self.mm = math.sin(m2) * m2

    def margin(self, cos_y, norms):
        if self.m1 == 1.0 and self.m2 == 0.0:
            return cos_y - self.m3  # CosFace / normalised softmax: no angle needed
        target = arc(cos_y, self.m1, self.m2)
        if self.easy_margin:
            target = torch.where(cos_y > 0, target, cos_y)
        else:
            target = torch.where(cos_y > self.th, target, cos_y - self.mm)
        return target - self.m3


@HEADS.register("softmax")
def _softmax(arg, *, embedding_size, num_classes, s=64.0, **kw):
    """Normalised softmax: s * cos theta, no margin."""
    return CombinedMargin(embedding_size, num_classes, s=s, m2=0.0, m3=0.0, **kw)


@HEADS.register("cosface")
def _cosface(arg, *, embedding_size, num_classes, s=64.0, m=0.4, **kw):
    return CombinedMargin(embedding_size, num_classes, s=s, m2=0.0, m3=m, **kw)


@HEADS.register("arcface")
def _arcface(arg, *, embedding_size, num_classes, s=64.0, m=0.5, **kw):
    return CombinedMargin(embedding_size, num_classes, s=s, m2=m, **kw)


@HEADS.register("combined")
def _combined(arg, *, embedding_size, num_classes, s=64.0, m1=1.0, m2=0.5, m3=0.0, **kw):
    return CombinedMargin(embedding_size, num_classes, s=s, m1=m1, m2=m2, m3=m3, **kw)
