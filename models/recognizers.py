"""Face recognizers behind one protocol.

Each declares the crop it wants (``template`` name and ``size``) and maps a batch of aligned crops,
(N, size, size, 3) uint8 RGB, to raw features (N, D) float32 *before* L2 normalisation, so the
pipeline can keep the feature norm (the MagFace/AdaFace quality signal). ``card`` is the model
card (preprocessing, licence, calibration), empty for a file that has none.

Registry models (from package-index packages; ``models/cards/<name>.json``):
``w600k_mbf``   InsightFace ArcFace MobileFaceNet, WebFace600K, 512-d. Non-commercial research only.
``edgeface_s``  EdgeFace-S (gamma 0.5), 512-d. BSD-3-Clause upstream.
``sface``       OpenCV Zoo SFace, 128-d. Apache-2.0.
Others:
``onnx:<file.onnx>``  any [N,3,S,S] -> [N,D] ONNX embedder: insightface ArcFace models (w600k_r50,
                      glintr100, ...), models exported by ``curate retrain``. Preprocessing from
                      the card beside it, else insightface's rule (see ``_sniff``).
``insightface:<model dir | pack name>``  the recognition model of an insightface pack.
``dlib-resnet``       dlib's 128-d ResNet: the last fallback (its norm carries no quality).
``chain:<projection.onnx>``  a projection trained on frozen embeddings (``curate loop``), after the
                      base recognizer its card names.
``adaface:<file.ckpt>``, ``magface:<file.pth>``  official AdaFace / MagFace iResNet checkpoints,
                      run in torch on the project's iResNet (``models.checkpoints``): their raw
                      norm is trained to carry quality.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np

from curate.errors import ModelError, require_module
from models.cards import builtin, card_for, packaged_path, verified_sha256
from models.detectors import insightface_model, to_input
from models.registry import RECOGNIZERS


@runtime_checkable
class Recognizer(Protocol):
    """What the pipeline needs of a recognizer; every one registered here satisfies it (a test
    builds each and checks)."""

    id: str  # name@sha256 prefix of the files it loads: names the embeddings it made
    template: str  # the alignment template of its crops (models.templates)
    size: int  # crop side, px
    dim: int  # embedding dimension
    card: dict  # its model card (preprocessing, licence, calibrations); {} for a file with none

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 RGB aligned crops -> (N, dim) float32 raw features, before L2
        normalisation (the norm is the quality signal of MagFace/AdaFace-trained models)."""


class DlibRecognizer:
    template, size, dim = "dlib", 150, 128

    def __init__(self):
        dlib = require_module("dlib", "faces")
        frm = require_module("face_recognition_models", "faces")
        path = frm.face_recognition_model_location()
        self._net = dlib.face_recognition_model_v1(path)
        self.card = builtin("dlib-resnet")
        self.sha256 = verified_sha256(path)
        self.id = f"dlib-resnet@{self.sha256[:12]}"

    def embed(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        # dlib's batch overload takes aligned 150x150 chips.
        vecs = self._net.compute_face_descriptor([np.ascontiguousarray(c) for c in crops])
        return np.array([np.array(v) for v in vecs], np.float32)


def _sniff(path: str) -> dict:
    """Preprocessing of a card-less ArcFace ONNX, by insightface's rule: a graph that starts with
    Sub and Mul nodes normalises its own input (feed 0-255); otherwise (x - 127.5) / 127.5. RGB."""
    onnx = require_module("onnx", "default")
    try:
        nodes = onnx.load(path, load_external_data=False).graph.node[:8]
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    names = [n.name for n in nodes]
    own = any(n.startswith(("Sub", "_minus")) for n in names) and any(n.startswith(("Mul", "_mul")) for n in names)
    return {"color": "RGB", "mean": 0.0 if own else 127.5, "std": 1.0 if own else 127.5, "template": "arcface"}


class OnnxRecognizer:
    """An ONNX embedder in onnxruntime, batched (graphs exported at batch 1 are made batchable in
    memory), with the card's preprocessing."""

    def __init__(self, path: str, card: dict, threads: int = 0, gpu: bool = False, batch_size: int = 32):
        from models import runtime

        files = runtime.model_files(path)
        digest = verified_sha256(path, files, card or None)  # every file it loads, before parsing
        self.card = card
        inp = card.get("input", {})
        if "mean" not in inp:
            inp = {**_sniff(path), **inp}
        self.template = inp.get("template", "arcface")
        self.mean, self.std, self.bgr = float(inp["mean"]), float(inp["std"]), inp.get("color", "RGB") == "BGR"
        self._sess = runtime.session(path, threads, gpu, name=path)  # as exported: read its shapes
        shape = self._sess.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3]:
            raise ModelError(f"{path}: a recognizer takes [N, 3, S, S] aligned crops; this one takes {shape}")
        self.size = int(shape[2])
        out = self._sess.get_outputs()[0].shape
        if len(out) != 2 or not isinstance(out[1], int):
            raise ModelError(f"{path}: a recognizer returns [N, D] features; this one returns {out}")
        self.dim = int(out[1])
        self._sess, limit = runtime.batched_session(path, threads, gpu, probe=(3, self.size, self.size), digest=digest)
        self.batch_size = min(batch_size, limit)
        self.sha256 = digest
        self.id = f"{card.get('name') or os.path.basename(path)}@{digest[:12]}"

    def embed(self, crops: np.ndarray) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        name = self._sess.get_inputs()[0].name
        out = []
        for s in range(0, len(crops), self.batch_size):
            x = to_input(crops[s : s + self.batch_size], self.bgr, self.mean, self.std)
            out.append(self._sess.run(None, {name: x})[0])
        return np.concatenate(out).astype(np.float32).reshape(len(crops), self.dim)


def _file_recognizer(path: str, threads: int, gpu: bool) -> OnnxRecognizer:
    found = card_for(path)
    return OnnxRecognizer(path, found[0] if found else {}, threads, gpu)


@RECOGNIZERS.register("dlib-resnet")
def _dlib(arg, **_):
    return DlibRecognizer()


@RECOGNIZERS.register("onnx")
def _onnx(arg, *, threads=0, gpu=False, **_):
    if not arg or not os.path.isfile(arg):
        raise ModelError(f"onnx recognizer: no such file {arg!r}")
    return _file_recognizer(arg, threads, gpu)


@RECOGNIZERS.register("insightface")
def _insightface(arg, *, allow_download=False, threads=0, gpu=False, **_):
    _, path = insightface_model(arg, "recognition", allow_download)
    return _file_recognizer(path, threads, gpu)


def _packaged(name: str):
    def factory(arg, *, threads=0, gpu=False, **_):
        if arg:
            raise ModelError(f"recognizer {name} takes no argument (got {arg!r}); use onnx:<file> for your own file")
        card = builtin(name)
        return OnnxRecognizer(packaged_path(card), card, threads, gpu)

    return factory


for _name in ("w600k_mbf", "edgeface_s", "sface"):
    RECOGNIZERS.register(_name)(_packaged(_name))


def _checkpoint(kind: str):
    def factory(arg, *, threads=0, gpu=False, **_):
        if not arg or not os.path.isfile(arg):
            raise ModelError(f"{kind} recognizer: no such checkpoint {arg!r} (use {kind}:/path/to/checkpoint)")
        from models.checkpoints import TorchRecognizer

        return TorchRecognizer(arg, kind, threads, gpu)

    return factory


for _kind in ("adaface", "magface"):
    RECOGNIZERS.register(_kind)(_checkpoint(_kind))


@RECOGNIZERS.register("chain")
def _chain(arg, *, threads=0, gpu=False, **kw):
    if not arg or not os.path.isfile(arg):
        raise ModelError(f"chain recognizer: no such projection {arg!r} (use chain:/path/to/projection.onnx)")
    from models.projection import ChainedRecognizer

    return ChainedRecognizer(arg, threads=threads, gpu=gpu, **kw)
