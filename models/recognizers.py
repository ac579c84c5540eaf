"""Face recognizers behind one protocol.

Each declares the crop it wants (``template`` name and ``size``) and maps a batch of aligned crops,
(N, size, size, 3) uint8 RGB, to raw features (N, D) float32 *before* L2 normalisation, so the
pipeline can keep the feature norm (the MagFace/AdaFace quality signal).

``dlib-resnet``: dlib's 128-d ResNet (offline default).
``onnx:<file.onnx>``: any [N,3,S,S] -> [N,D] ONNX embedder: insightface ArcFace models
(w600k_r50, ...) and models exported by ``curate retrain``, run by insightface's ArcFaceONNX.
``insightface:<model dir | pack name>``: the recognition model of an insightface pack.
"""

from __future__ import annotations

import os

import numpy as np

from curate.errors import ModelError, require_module
from models.cards import verified_sha256
from models.detectors import insightface_model
from models.registry import RECOGNIZERS


class DlibRecognizer:
    template, size, dim = "dlib", 150, 128

    def __init__(self):
        dlib = require_module("dlib", "faces")
        frm = require_module("face_recognition_models", "faces")
        path = frm.face_recognition_model_location()
        self._net = dlib.face_recognition_model_v1(path)
        self.id = f"dlib-resnet@{verified_sha256(path)[:12]}"

    def embed(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        # dlib's batch overload takes aligned 150x150 chips.
        vecs = self._net.compute_face_descriptor([np.ascontiguousarray(c) for c in crops])
        return np.array([np.array(v) for v in vecs], np.float32)


class OnnxRecognizer:
    template = "arcface"

    def __init__(self, model, path: str):
        self._model = model
        self.size = int(model.input_size[0])
        if model.input_size[0] != model.input_size[1]:
            raise ModelError(f"{path}: recognizer input must be square, got {model.input_size}")
        self.dim = int(model.output_shape[-1])
        self.id = f"{os.path.basename(path)}@{verified_sha256(path)[:12]}"

    def embed(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        bgr = [np.ascontiguousarray(c[..., ::-1]) for c in crops]  # ArcFaceONNX swaps BGR -> RGB
        return np.asarray(self._model.get_feat(bgr), np.float32).reshape(len(crops), -1)


def _prepared(model, gpu: bool):
    model.prepare(ctx_id=0 if gpu else -1)
    return model


@RECOGNIZERS.register("dlib-resnet")
def _dlib(arg, **_):
    return DlibRecognizer()


@RECOGNIZERS.register("onnx")
def _onnx(arg, *, gpu=False, **_):
    if not arg or not os.path.isfile(arg):
        raise ModelError(f"onnx recognizer: no such file {arg!r}")
    model, path = insightface_model(arg, "recognition")
    return OnnxRecognizer(_prepared(model, gpu), path)


@RECOGNIZERS.register("insightface")
def _insightface(arg, *, allow_download=False, gpu=False, **_):
    model, path = insightface_model(arg, "recognition", allow_download)
    return OnnxRecognizer(_prepared(model, gpu), path)
