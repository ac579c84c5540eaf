"""A trainable head on frozen embeddings: the retraining that is meaningful on a CPU and a few
thousand faces (a backbone from scratch on ~2K images learns noise, not faces).

A linear projection (D -> D, started at the identity) is trained with a margin head from
``models/heads`` (ArcFace by default; sub-center ArcFace for the K=3->1 recipe) on the unit
embeddings a run stored, labelled by identity. Exported as a post-embedding ONNX
(``embedding`` [N, D] -> ``projected`` [N, D]) with a card that names its base recognizer, it is
chained by ``--recognizer chain:FILE.onnx``: the base model embeds, the projection turns the unit
embedding, and the base model's raw norm is kept as the feature norm, so quality stays calibrated.
"""

from __future__ import annotations

import numpy as np

from curate.errors import ModelError, require_module
from curate.stats import unit


def _torch():
    return require_module("torch", "train")


def build(dim: int):
    torch = _torch()
    lin = torch.nn.Linear(dim, dim, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(dim))  # starts as the base embedding
    return lin


def train(emb: np.ndarray, labels, head: str = "arcface", head_kwargs: dict | None = None, epochs: int = 30,
          batch_size: int = 256, lr: float = 1e-3, seed: int = 0, drop_at: int | None = None,
          drop_angle: float = 75.0) -> tuple:
    """Fit a projection on unit embeddings (N, D) with identity labels. ``drop_at`` (with a
    ``subcenter`` head, k=3): at that epoch drop faces beyond ``drop_angle`` of their identity's
    dominant sub-center and go on with K=1 (the paper's K=3->1). Returns (projection, kept mask)."""
    torch = _torch()
    from models.heads import build_head, train_epoch

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(emb, np.float32))
    y = torch.from_numpy(np.unique(np.asarray(labels, object).astype(str), return_inverse=True)[1].astype(np.int64))
    proj = build(x.shape[1])
    margin = build_head(head, x.shape[1], int(y.max()) + 1, **(head_kwargs or {}))
    keep = torch.ones(len(x), dtype=torch.bool)

    def optimiser():
        return torch.optim.Adam(list(proj.parameters()) + list(margin.parameters()), lr=lr)

    opt = optimiser()
    for ep in range(epochs):
        if drop_at is not None and ep == drop_at and getattr(margin, "k", 1) > 1:
            with torch.no_grad():
                rep = margin.report(proj(x), y)
                keep = margin.keep_mask(rep, y, drop_angle).cpu()
            margin = margin.to_single_center(rep.dominant)
            opt = optimiser()
        idx_all = torch.nonzero(keep).squeeze(1)
        order = idx_all[torch.randperm(len(idx_all), generator=g)]
        proj.train()
        margin.train()
        train_epoch(lambda idx: margin(proj(x[idx]), y[idx]), opt, order, batch_size, min_batch=2)
    proj.eval()
    return proj, keep.numpy()


def apply(proj, emb: np.ndarray) -> np.ndarray:
    torch = _torch()
    with torch.inference_mode():
        out = proj(torch.from_numpy(np.ascontiguousarray(emb, np.float32))).numpy()
    return unit(out)


def export(proj, path: str, dim: int) -> None:
    torch = _torch()
    torch.onnx.export(proj, (torch.zeros(2, dim),), path, input_names=["embedding"], output_names=["projected"],
                      dynamic_axes={"embedding": {0: "n"}, "projected": {0: "n"}}, opset_version=17, dynamo=False)


class ChainedRecognizer:
    """The base recognizer named by the projection's card, then the projection: direction from the
    projection, norm (the quality signal) from the base model."""

    def __init__(self, path: str, threads: int = 0, gpu: bool = False, **kw):
        from models import runtime
        from models.cards import card_for, verified_sha256
        from models.registry import RECOGNIZERS

        found = card_for(path)
        if not found or not found[0].get("base"):
            raise ModelError(f"{path}: a chained projection needs its card (beside it) naming the base recognizer")
        self.card = found[0]
        self.base = RECOGNIZERS.build(self.card["base"], threads=threads, gpu=gpu, **kw)
        self.template, self.size, self.dim = self.base.template, self.base.size, self.base.dim
        files = runtime.model_files(path)
        self.sha256 = verified_sha256(path, files, self.card)
        self._sess = runtime.session(path, threads, gpu, name=path)
        self.id = f"{self.card.get('name') or 'chain'}@{self.sha256[:12]}"

    def embed(self, crops: np.ndarray) -> np.ndarray:
        raw = self.base.embed(crops)
        if len(raw) == 0:
            return raw
        norm = np.sqrt(np.einsum("ij,ij->i", raw, raw))[:, None]
        out = self._sess.run(None, {"embedding": unit(raw).astype(np.float32)})[0]
        return (unit(out) * norm).astype(np.float32)
