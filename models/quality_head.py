"""A quality head trained here: a small MLP on the frozen raw features of a recognizer, trained with
the MagFace loss (magnitude-aware margin plus its regulariser, ``models.heads.magface``) on
labelled faces and degraded copies of them, so that the norm of its output ranks how recognisable
a face is. The registry recognizers' own norms were not trained to carry quality (EdgeFace-S's
ranks degraded copies below their originals only 81% of the time).

``train`` fits it; ``export`` writes an ONNX file that maps raw features [N, D] to the quality norm
[N]; ``QualityModel`` runs that file (``curate run/score --quality-model FILE.onnx``) on the raw
features a run stored, so a run can be re-scored with it without re-embedding.
"""

from __future__ import annotations

import numpy as np

from curate.errors import ModelError, require_module


def _torch():
    return require_module("torch", "train")


def build(dim: int, hidden: int = 512, out: int = 512):
    torch = _torch()
    nn = torch.nn

    class QualityHead(nn.Module):
        """raw feature (B, D) -> (B, out) feature whose norm is the quality. The input is
        standardised by the training set's mean raw norm, so any recognizer's scale fits, and the
        output gain is set so that training starts with norms near 30, inside MagFace's [10, 110]
        (outside it the magnitude gets no gradient, as in the official clamp)."""

        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.ones(()))
            self.register_buffer("gain", torch.ones(()))
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.PReLU(hidden),
                                     nn.Linear(hidden, out))

        def forward(self, x):
            return self.net(x / self.scale) * self.gain

    return QualityHead()


def train(raw: np.ndarray, labels: np.ndarray, epochs: int = 40, batch_size: int = 256, lr: float = 1e-3,
          seed: int = 0, hidden: int = 512, out: int = 512, log=None):
    """Fit a head on raw features (N, D) float32 with integer identity labels (N,). Returns the
    head (eval mode). MagFace's defaults (s 64, magnitudes 10-110, margins 0.45-0.8, lambda_g 35)."""
    torch = _torch()
    from models.heads import train_epoch
    from models.heads.magface import MagFace

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(raw, np.float32))
    y = torch.from_numpy(np.unique(np.asarray(labels), return_inverse=True)[1].astype(np.int64))
    head = build(x.shape[1], hidden, out)
    with torch.no_grad():
        head.scale.fill_(float(x.norm(dim=1).mean()))
        head.gain.fill_(30.0 / float(head(x[torch.randperm(len(x), generator=g)[:4096]]).norm(dim=1).mean()))
    loss_fn = MagFace(out, int(y.max()) + 1)
    opt = torch.optim.Adam(list(head.parameters()) + list(loss_fn.parameters()), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    head.train()
    for ep in range(epochs):
        total = train_epoch(lambda idx: loss_fn(head(x[idx]), y[idx]), opt, torch.randperm(len(x), generator=g),
                            batch_size, min_batch=2)
        sched.step()
        if log:
            log(f"epoch {ep + 1}/{epochs} loss {total / len(x):.3f}")
    return head.eval()


def norms(head, raw: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    torch = _torch()
    out = []
    with torch.inference_mode():
        for s in range(0, len(raw), batch_size):
            out.append(head(torch.from_numpy(np.ascontiguousarray(raw[s : s + batch_size], np.float32))).norm(dim=1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def export(head, path: str, dim: int) -> None:
    """ONNX: input ``raw`` [N, D] float32 -> output ``quality`` [N] (the head output's norm)."""
    torch = _torch()

    class WithNorm(torch.nn.Module):
        def __init__(self, h):
            super().__init__()
            self.h = h

        def forward(self, raw):
            return torch.linalg.vector_norm(self.h(raw), dim=1)

    torch.onnx.export(WithNorm(head.eval()), (torch.zeros(2, dim),), path, input_names=["raw"], output_names=["quality"],
                      dynamic_axes={"raw": {0: "n"}, "quality": {0: "n"}}, opset_version=17, dynamo=False)


class QualityModel:
    """An exported quality head in onnxruntime: raw features (N, D) -> quality norms (N,)."""

    def __init__(self, path: str, threads: int = 1):
        from models import runtime
        from models.cards import verified_sha256

        self.sha256 = verified_sha256(path, runtime.model_files(path))
        self._sess = runtime.session(path, threads, False, name=path)
        shape = self._sess.get_inputs()[0].shape
        if len(shape) != 2 or not isinstance(shape[1], int):
            raise ModelError(f"{path}: a quality model takes raw features [N, D]; this one takes {shape}")
        self.dim = int(shape[1])

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if raw.shape[1] != self.dim:
            raise ModelError(f"quality model takes {self.dim}-d features; this run's recognizer gives {raw.shape[1]}-d")
        out = [self._sess.run(None, {"raw": np.ascontiguousarray(raw[s : s + 8192], np.float32)})[0]
               for s in range(0, len(raw), 8192)]
        return np.concatenate(out).reshape(-1).astype(np.float32) if out else np.zeros(0, np.float32)


def head_card(path: str) -> dict:
    """The card beside a quality head (its reference quantiles): a ModelError naming the fix when
    the head or its card is missing."""
    import os

    from models.cards import card_path, read_card

    card = card_path(path)
    if not os.path.isfile(path):
        raise ModelError(f"quality model {path}: no such file")
    if not os.path.isfile(card):
        raise ModelError(f"quality model {path}: no card beside it ({card}); export it with bench/quality_head.py "
                         "--export, which writes the reference quantiles its percentiles need")
    return read_card(card)


def with_quality_model(path: str, raw: np.ndarray, cal: dict) -> tuple[np.ndarray, dict]:
    """(learned quality norms (N,), the calibration with the head's reference added as the
    ``learned`` signal and the head card's quality signals in use)."""
    from curate.stats import NORM_GRID

    card = head_card(path)
    q = QualityModel(path)(np.asarray(raw, np.float32))
    out = {**cal, "cues": {**cal.get("cues", {}), "learned": {"grid": list(NORM_GRID), "quantiles": card["quantiles"]}},
           "quality": {**cal.get("quality", {}), "signals": list(card.get("signals", ["learned"])),
                       "model": {"path": path, "sha256": card.get("sha256")}}}
    return q.astype(np.float64), out
