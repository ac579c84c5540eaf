"""Sub-center ArcFace: K sub-centers per class, max-pooled before the ArcFace margin, and the
K=3->1 cleaning procedure (dominant sub-center per class, drop the others and samples beyond 75
degrees of it, continue with K=1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.heads import HEADS
from models.heads.margin import CombinedMargin


@dataclass
class SubcenterReport:
    """Per sample: sub-center index within its own class (B,), angle to its class's dominant
    sub-center in degrees (B,); per class: dominant sub-center (C,), its share of the class (C,)."""

    subcenter: torch.Tensor
    angle_to_dominant: torch.Tensor
    dominant: torch.Tensor
    dominant_share: torch.Tensor


class SubCenterArcFace(CombinedMargin):
    def __init__(self, embedding_size, num_classes, s=64.0, m=0.5, k=3, **kw):
        super().__init__(embedding_size, num_classes, s=s, m2=m, k=k, **kw)

    @torch.no_grad()
    def report(self, emb: torch.Tensor, labels: torch.Tensor) -> SubcenterReport:
        """Which sub-center each sample picks, and where it sits relative to its dominant one."""
        cos = self.subcenter_cosines(F.normalize(emb.float(), dim=1))  # (B, C, K)
        own = cos[torch.arange(len(labels)), labels]  # (B, K)
        pick = own.argmax(dim=1)
        counts = torch.zeros(self.num_classes, self.k, dtype=torch.long, device=emb.device)
        counts.index_put_((labels, pick), torch.ones_like(pick), accumulate=True)
        dominant = counts.argmax(dim=1)
        total = counts.sum(dim=1)
        share = counts.gather(1, dominant[:, None]).squeeze(1) / total.clamp(min=1)
        cos_dom = own.gather(1, dominant[labels][:, None]).squeeze(1)
        angle = torch.rad2deg(torch.acos(cos_dom.clamp(-1.0, 1.0)))
        return SubcenterReport(pick, angle, dominant, torch.where(total > 0, share, torch.nan))

    @torch.no_grad()
    def keep_mask(self, report: SubcenterReport, labels: torch.Tensor, max_angle: float = 75.0) -> torch.Tensor:
        """K=3->1: keep samples within ``max_angle`` degrees of their class's dominant sub-center."""
        return report.angle_to_dominant <= max_angle

    @torch.no_grad()
    def to_single_center(self, dominant: torch.Tensor) -> CombinedMargin:
        """A K=1 ArcFace head whose class centers are the dominant sub-centers (same s and m)."""
        head = CombinedMargin(self.embedding_size, self.num_classes, s=self.s, m2=self.m2,
                              sample_rate=self.sample_rate)
        w = self.weight.view(self.num_classes, self.k, self.embedding_size)
        head.weight.copy_(w[torch.arange(self.num_classes), dominant.to(w.device)])
        return head


@HEADS.register("subcenter")
def _subcenter(arg, *, embedding_size, num_classes, s=64.0, m=0.5, k=3, **kw):
    return SubCenterArcFace(embedding_size, num_classes, s=s, m=m, k=k, **kw)
