"""Sub-center ArcFace: K sub-centers per class, max-pooled before the ArcFace margin, and the
K=3->1 cleaning procedure (dominant sub-center per class, drop the others and samples beyond 75
degrees of it, continue with K=1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.heads.base import HEADS, train_epoch
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


def fit_on_embeddings(emb, codes, n_ids: int, k: int = 3, init=None, epochs: int = 3, batch_size: int = 4096,
                      lr: float = 0.1, max_classes_per_step: int = 16384, seed: int = 0, device: str | None = None):
    """Fit a sub-center ArcFace head (K sub-centers per identity) on frozen unit embeddings: one
    classifier over every identity, so each face's other identities are its negatives, batched
    over all identities at once (Partial FC when there are many). ``init`` (I, K, D) starts it
    (e.g. from k-means). Returns (assign (N,) numpy, sub-centers (I, K, D) numpy unit)."""
    import numpy as np

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    y_all = torch.from_numpy(np.asarray(codes, dtype=np.int64))
    head = SubCenterArcFace(x_all.shape[1], n_ids, k=k, sample_rate=min(1.0, max_classes_per_step / n_ids)).to(device)
    if init is not None:
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(np.asarray(init, np.float32)).reshape(n_ids * k, -1))
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9)
    head.train()
    for _ in range(epochs):
        train_epoch(lambda idx: head(x_all[idx].to(device), y_all[idx].to(device)), opt,
                    torch.randperm(len(x_all), generator=g), batch_size)
    head.eval()
    assign = torch.empty(len(x_all), dtype=torch.long)
    with torch.no_grad():
        w = F.normalize(head.weight.view(n_ids, k, -1), dim=2)
        for s in range(0, len(x_all), batch_size):
            x = F.normalize(x_all[s : s + batch_size].to(device), dim=1)
            own = torch.einsum("bd,bkd->bk", x, w[y_all[s : s + batch_size].to(device)])
            assign[s : s + batch_size] = own.argmax(1).cpu()
    return assign.numpy(), w.cpu().numpy()
