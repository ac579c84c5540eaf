"""The margin head base class, the heads' registry and the minibatch pass (models.heads documents
the heads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import Registry

HEADS = Registry("head")


class MarginHead(nn.Module):
    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, k: int = 1,
                 sample_rate: float = 1.0):
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError("sample_rate must be in (0, 1]")
        self.embedding_size, self.num_classes, self.s, self.k = embedding_size, num_classes, s, k
        self.sample_rate = sample_rate
        self.weight = nn.Parameter(torch.normal(0, 0.01, (num_classes * k, embedding_size)))

    # -- what subclasses define ------------------------------------------------------------
    def margin(self, cos_y: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """(B,) target cosines, (B,) raw feature norms -> (B,) margin-adjusted target values."""
        return cos_y

    def extra_loss(self, norms: torch.Tensor) -> torch.Tensor:
        return norms.new_zeros(())

    # -- shared machinery ------------------------------------------------------------------
    def subcenter_cosines(self, x_unit: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) unit features -> (B, C', K) cosines to each sub-center of each (selected) class."""
        w = self.weight.view(self.num_classes, self.k, self.embedding_size)
        if classes is not None:
            w = w.index_select(0, classes)
        w = F.normalize(w, dim=2)
        return torch.einsum("bd,ckd->bck", x_unit, w)

    def cosines(self, x_unit: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C') class cosines: max over the K sub-centers (max pooling, before any margin)."""
        return self.subcenter_cosines(x_unit, classes).amax(dim=2)

    def sample_classes(self, labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Partial FC: (class subset or None for all, labels remapped into it)."""
        if self.sample_rate >= 1.0 or not self.training:
            return None, labels
        positives = torch.unique(labels)
        n = max(int(self.sample_rate * self.num_classes), len(positives))
        score = torch.rand(self.num_classes, device=labels.device)
        score[positives] = 2.0  # positives always kept
        classes = torch.sort(torch.topk(score, n).indices).values
        return classes, torch.searchsorted(classes, labels)

    def logits(self, emb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (scaled logits (B, C'), labels into C', raw norms (B,))."""
        norms = emb.norm(dim=1)
        classes, target = self.sample_classes(labels)
        cos = self.cosines(F.normalize(emb, dim=1), classes)
        cos_y = cos.gather(1, target[:, None]).squeeze(1)
        adjusted = self.margin(cos_y, norms)
        logits = cos.scatter(1, target[:, None], adjusted[:, None].to(cos.dtype))
        return logits * self.s, target, norms

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, D) raw features (not normalised: MagFace/AdaFace need the norm), (B,) int labels -> loss."""
        logits, target, norms = self.logits(emb.float(), labels)
        return F.cross_entropy(logits, target) + self.extra_loss(norms)


def train_epoch(loss_of, opt, order, batch_size: int, min_batch: int = 1) -> float:
    """One pass over the sample indices ``order`` in batches: ``loss_of(idx)`` gives a batch's loss,
    the optimiser steps on it. Batches smaller than ``min_batch`` are skipped. Returns the loss
    summed over samples (for a per-epoch mean)."""
    total = 0.0
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        if len(idx) < min_batch:
            continue
        loss = loss_of(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total


def build_head(name: str, embedding_size: int, num_classes: int, **kwargs) -> MarginHead:
    return HEADS.build(name, embedding_size=embedding_size, num_classes=num_classes, **kwargs)

