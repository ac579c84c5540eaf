"""Attribute models (demographics) over aligned face crops, run by onnxruntime.

``genderage``: insightface's ``genderage.onnx`` layout: one [N,3,S,S] RGB input, one [N,3] output
(female score, male score, age / 100). insightface feeds it a crop of 1.5x the detector box; the
stored 112x112 ArcFace crop frames the face about as widely, so it is resized to S x S (documented
approximation: the crop is aligned, insightface's is not rotated).
``classifier``: any [N,3,S,S] -> [N,K] ONNX classifier with labels given by the user, e.g.
``skin_tone=I,II,III,IV,V,VI``; softmax is applied unless the rows already sum to 1.

Model files are opened by onnxruntime only (no pickle), and identified by their sha256.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from curate.errors import ModelError
from models.cards import verified_sha256

AGE_GROUPS = ((0, 18, "0-17"), (18, 30, "18-29"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 999, "60+"))


def age_group(age: np.ndarray) -> list[str]:
    out = []
    for a in np.asarray(age, np.float64):
        out.append(next(lbl for lo, hi, lbl in AGE_GROUPS if lo <= a < hi) if np.isfinite(a) else None)
    return out


def _probs(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if np.all(x >= 0) and np.allclose(x.sum(1), 1.0, atol=1e-3):
        return x
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class OnnxAttributes:
    """predict(crops (N,112,112,3) uint8 RGB) -> {attribute: (values list, score (N,), number (N,) or None)}."""

    def __init__(self, path: str, labels: dict[str, list[str]] | None = None, mean: float = 0.0, std: float = 1.0,
                 gpu: bool = False):
        import onnxruntime as ort
        if not os.path.isfile(path):
            raise ModelError(f"{path}: attribute model not found")
        sha = verified_sha256(path)  # before onnxruntime opens it
        providers = (["CUDAExecutionProvider"] if gpu else []) + ["CPUExecutionProvider"]
        try:
            self._sess = ort.InferenceSession(path, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: not a loadable ONNX model: {exc}") from exc
        inp = self._sess.get_inputs()[0]
        shape = inp.shape
        self.size = shape[2] if isinstance(shape[2], int) else 96
        self._input = inp.name
        out_dim = self._sess.get_outputs()[0].shape[-1]
        self.labels = labels
        self.kind = "classifier" if labels else "genderage"
        if self.kind == "genderage" and out_dim not in (3, None) and not isinstance(out_dim, str):
            raise ModelError(f"{path}: output width {out_dim}; a genderage model gives 3 (give --labels for a classifier)")
        if labels and len(labels) != 1:
            raise ModelError("a classifier predicts one attribute: --labels NAME=a,b,c")
        self.mean, self.std = mean, std
        self.id = f"{os.path.basename(path)}@{sha[:12]}"

    def predict(self, crops: np.ndarray) -> dict[str, tuple[list, np.ndarray, np.ndarray | None]]:
        s = self.size
        x = np.stack([cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA) for c in crops]).astype(np.float32)
        x = ((x - self.mean) / self.std).transpose(0, 3, 1, 2)
        y = np.asarray(self._sess.run(None, {self._input: np.ascontiguousarray(x)})[0], np.float64).reshape(len(crops), -1)
        if self.kind == "genderage":
            p = _probs(y[:, :2])
            g = p.argmax(1)
            age = np.clip(y[:, 2] * 100.0, 0, 120)
            return {
                "gender": (["male" if v == 1 else "female" for v in g], p.max(1), None),
                "age_group": (age_group(age), np.full(len(y), np.nan), age),
            }
        (name, labels), = self.labels.items()
        if y.shape[1] != len(labels):
            raise ModelError(f"{self.id}: {y.shape[1]} outputs but {len(labels)} labels for {name}")
        p = _probs(y)
        return {name: ([labels[i] for i in p.argmax(1)], p.max(1), None)}
