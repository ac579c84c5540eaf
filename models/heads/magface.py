"""MagFace: a magnitude-aware angular margin m(a), linear from l_m at l_a to u_m at u_a, plus the
regulariser g(a) = 1/a + a/u_a^2 (the official hyperbola; minimum at u_a), weighted by lambda_g.
The magnitude a = ||f|| is clamped to [l_a, u_a] before m and g (no gradient outside), and the
margin applies only where cos theta > 0 (the official ``easy_margin``)."""

from __future__ import annotations

import warnings

import torch

from models.heads.base import HEADS, MarginHead


def lambda_min(s: float, l_a: float, u_a: float, l_m: float, u_m: float) -> float:
    """Smallest lambda_g for which each sample's loss is convex in a with a unique optimum:
    s * c_m * l_a^2 * u_a^2 / (u_a^2 - l_a^2). 22.59 for the defaults."""
    c_m = (u_m - l_m) / (u_a - l_a)
    return s * c_m * l_a**2 * u_a**2 / (u_a**2 - l_a**2)


class MagFace(MarginHead):
    def __init__(self, embedding_size, num_classes, s=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8,
                 lambda_g=35.0, **kw):
        super().__init__(embedding_size, num_classes, s=s, **kw)
        self.l_a, self.u_a, self.l_m, self.u_m, self.lambda_g = l_a, u_a, l_m, u_m, lambda_g
        bound = lambda_min(s, l_a, u_a, l_m, u_m)
        if lambda_g < bound:
            warnings.warn(f"MagFace lambda_g={lambda_g} is below the convexity bound {bound:.2f}: "
                          "per-sample optimal magnitudes are not guaranteed to be unique", stacklevel=2)

    def clamp(self, norms: torch.Tensor) -> torch.Tensor:
        return norms.clamp(self.l_a, self.u_a)

    def m(self, a: torch.Tensor) -> torch.Tensor:
        return (self.u_m - self.l_m) / (self.u_a - self.l_a) * (self.clamp(a) - self.l_a) + self.l_m

    def g(self, a: torch.Tensor) -> torch.Tensor:
        a = self.clamp(a)
        return 1.0 / a + a / self.u_a**2

    def margin(self, cos_y, norms):
        m = self.m(norms)  # per sample, so the expanded cos(theta + m) form of margin.arc
        sin = torch.sqrt((1.0 - cos_y * cos_y).clamp(min=1e-12))
        return torch.where(cos_y > 0, cos_y * torch.cos(m) - sin * torch.sin(m), cos_y)

    def extra_loss(self, norms):
        return self.lambda_g * self.g(norms).mean()


@HEADS.register("magface")
def _magface(arg, *, embedding_size, num_classes, **kw):
    return MagFace(embedding_size, num_classes, **kw)

