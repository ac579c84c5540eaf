"""AdaFace: the margin adapts to image quality, read from the feature norm relative to EMA batch
statistics: z = clip(h * (||f|| - mu) / (sigma + eps), -1, 1), with the norm detached.
Target logit s * (cos(clamp(theta + g_angle, eps, pi - eps)) - g_add), g_angle = -m z,
g_add = m z + m. z = -1 is ArcFace(m), z = 0 CosFace(m), z = +1 a negative angular margin."""

from __future__ import annotations

import math

import torch

from models.heads.base import HEADS, MarginHead


class AdaFace(MarginHead):
    def __init__(self, embedding_size, num_classes, s=64.0, m=0.4, h=0.333, t_alpha=0.01, eps=1e-3, **kw):
        super().__init__(embedding_size, num_classes, s=s, **kw)
        self.m, self.h, self.t_alpha, self.eps = m, h, t_alpha, eps
        # Saved with the checkpoint: a ready per-model norm calibration. Start like CosFace (z ~ 0).
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))

    def quality(self, norms: torch.Tensor) -> torch.Tensor:
        """(B,) raw norms -> (B,) z in [-1, 1] by the current EMA statistics (no gradient)."""
        safe = norms.detach().clamp(0.001, 100)
        return ((safe - self.batch_mean) / (self.batch_std + self.eps) * self.h).clamp(-1, 1)

    @torch.no_grad()
    def update_stats(self, norms: torch.Tensor) -> None:
        safe = norms.detach().clamp(0.001, 100)
        if len(safe) > 1:
            self.batch_mean.mul_(1 - self.t_alpha).add_(self.t_alpha * safe.mean())
            self.batch_std.mul_(1 - self.t_alpha).add_(self.t_alpha * safe.std())

    def margin(self, cos_y, norms):
        if self.training:
            self.update_stats(norms)  # the reference updates before computing the margin
        z = self.quality(norms)
        theta = torch.acos(cos_y.clamp(-1 + self.eps, 1 - self.eps))
        theta_m = (theta - self.m * z).clamp(self.eps, math.pi - self.eps)
        return torch.cos(theta_m) - (self.m * z + self.m)


@HEADS.register("adaface")
def _adaface(arg, *, embedding_size, num_classes, **kw):
    return AdaFace(embedding_size, num_classes, **kw)
