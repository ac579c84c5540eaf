"""What every detector shares: ``Faces``, the ``Detector`` protocol, the geometry of placing an
image on a model's canvas, non-maximum suppression, and ``OnnxDetector``, the batched onnxruntime
runner an ONNX family subclasses (models/detectors/scrfd.py, yunet.py)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from curate.errors import ModelError
from models.cards import builtin, card_for, packaged_path, verified_sha256
from models.registry import DETECTORS


@dataclass
class Faces:
    """k faces of one image. boxes (k, 4) float32 x1,y1,x2,y2 px; landmarks (k, 5, 2) float32 px
    in ArcFace order; scores (k,) float32 (detector-specific scale)."""

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    @staticmethod
    def empty() -> "Faces":
        return Faces(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.scores)


class Detector:
    """Base: ``detect_batch`` loops over ``detect``; batched detectors override it."""

    id: str = ""

    def detect(self, img: np.ndarray) -> Faces:
        return self.detect_batch([img])[0]

    def detect_batch(self, imgs: list[np.ndarray]) -> list[Faces]:
        return [self.detect(img) for img in imgs]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, by decreasing score."""
    x1, y1, x2, y2 = boxes.T
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        order = rest[inter / np.maximum(area[i] + area[rest] - inter, 1e-9) <= iou]
    return np.array(keep, np.int64)


@dataclass(frozen=True)
class Placement:
    """Where an image sits in the detector input: scaled by ``scale``, its top-left at (x, y) of
    an ``h`` x ``w`` canvas (multiples of the detector's stride)."""

    scale: float
    x: int
    y: int
    h: int
    w: int


def input_plan(height: int, width: int, max_side: int, margin: float, min_side: int = 0, stride: int = 32) -> Placement:
    """Choose the input size per image. The image is scaled down (never up, unless its long side
    is below ``min_side``) so that it plus a ``margin`` (fraction of its long side, each side)
    fits ``max_side``, then centred on a canvas rounded up to ``stride``. Small images stay small
    (a 92x112 crop costs a 192 px pass, not a 640 px one), and a face that fills its image gets
    the context an anchor-based detector needs."""
    long = max(height, width)
    scale = min(1.0, max_side / (long * (1 + 2 * margin)))
    if min_side and long * scale < min_side:
        scale = min(min_side / long, max_side / (long * (1 + 2 * margin)))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    pad = round(margin * max(h, w))
    ch, cw = -(-(h + 2 * pad) // stride) * stride, -(-(w + 2 * pad) // stride) * stride
    return Placement(scale, (cw - w) // 2, (ch - h) // 2, ch, cw)


def place(img: np.ndarray, p: Placement, fill: int) -> np.ndarray:
    import cv2

    h, w = round(img.shape[0] * p.scale), round(img.shape[1] * p.scale)
    h, w = max(1, h), max(1, w)
    canvas = np.full((p.h, p.w, 3), fill, np.uint8)
    interp = cv2.INTER_AREA if p.scale < 1 else cv2.INTER_LINEAR
    canvas[p.y : p.y + h, p.x : p.x + w] = img if (h, w) == img.shape[:2] else cv2.resize(img, (w, h), interpolation=interp)
    return canvas


def equalised(img: np.ndarray) -> np.ndarray:
    """RGB with the luma histogram equalised (chroma kept): dark or flat faces become detectable."""
    import cv2

    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)
    ycc[..., 0] = cv2.equalizeHist(np.ascontiguousarray(ycc[..., 0]))
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def to_input(batch: np.ndarray, bgr: bool, mean: float, std: float) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 (x - mean) / std, in the model's channel
    order: one conversion copy, then in place."""
    x = np.ascontiguousarray((batch[..., ::-1] if bgr else batch).transpose(0, 3, 1, 2), dtype=np.float32)
    if mean:
        x -= mean
    if std != 1.0:
        x *= 1.0 / std
    return x


@functools.lru_cache(maxsize=256)
def grid(h: int, w: int, stride: int, anchors: int) -> np.ndarray:
    """(h/stride * w/stride * anchors, 2) cell x, y indices, row-major, anchors consecutive."""
    ys, xs = np.mgrid[: h // stride, : w // stride]
    g = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32)
    g = np.repeat(g, anchors, axis=0) if anchors > 1 else g
    g.setflags(write=False)  # cached: shared by every call
    return g


def cat(boxes, kps, scores):
    if not scores:
        return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
    return np.concatenate(boxes), np.concatenate(kps), np.concatenate(scores)


class OnnxDetector(Detector):
    """An ONNX detector family in onnxruntime (one subclass a family, in a module of its own: its
    name, built-in card, input defaults, output check and decoding). Images are placed per
    ``input_plan`` and run in batches of equal canvas size; images where the first pass finds
    nothing get a second pass with a wide margin (faces that fill the image: aligned crops, lab
    sets), then boxes and points are mapped back to image pixels and suppressed per image."""

    family: str = ""  # the registry name
    default_card: str = ""  # the built-in card of the packaged model
    mean, std, color = 0.0, 1.0, "RGB"  # input normalisation where the card says none

    def check_outputs(self, path: str, names: list[str]) -> None:
        """ModelError when the graph's outputs are not this family's."""

    def decode(self, outs: list[np.ndarray], names: list[str], h: int, w: int) -> list[tuple]:
        """Raw outputs of a batch -> per image (boxes, kps (k, 5, 2), scores) in input pixels."""
        raise NotImplementedError

    @classmethod
    def register(cls, family_cls):
        """Class decorator: a family's factory under its name (``name`` or ``name:file.onnx``)."""
        def factory(arg, *, min_score=None, threads=0, gpu=False, det_size=None, **_):
            if arg:
                if not os.path.isfile(arg):
                    raise ModelError(f"{family_cls.family} detector: no such file {arg!r}")
                found = card_for(arg)
                path, card = arg, (found[0] if found else {})
            else:
                card = builtin(family_cls.default_card)
                path = packaged_path(card)
            return family_cls(path, card, min_score, threads, gpu, max_side=det_size)

        factory.default_card = family_cls.default_card
        DETECTORS.register(family_cls.family)(factory)
        return family_cls

    def __init__(self, path: str, card: dict, min_score: float | None, threads: int = 0,
                 gpu: bool = False, max_side: int | None = None, batch_pixels: int = 4 * 640 * 640):
        from models import runtime

        files = runtime.model_files(path)
        digest = verified_sha256(path, files, card or None)  # before onnxruntime parses it
        self.card = card
        inp = card.get("input", {})
        self.mean, self.std = float(inp.get("mean", self.mean)), float(inp.get("std", self.std))
        self.bgr = inp.get("color", self.color) == "BGR"
        self.max_side = max_side or int(inp.get("max_side", 640))
        defaults = card.get("defaults", {})
        self.min_score = float(min_score if min_score is not None else defaults.get("min_score", 0.5))
        self.nms_iou = float(defaults.get("nms_iou", 0.4))
        self._sess, limit = runtime.batched_session(path, threads, gpu, spatial=True, probe=(3, 96, 128),
                                                     digest=digest)
        # A batch holds about batch_pixels of canvas: four 640-px photos or dozens of small crops.
        # Activations scale with it, and it bounds a worker's memory; on a CPU a larger batch is
        # no faster (on a GPU, raise it).
        self.batch_pixels, self.batch_limit = batch_pixels, limit
        self._names = [o.name for o in self._sess.get_outputs()]
        self.check_outputs(path, self._names)
        self.id = f"{card.get('name') or os.path.basename(path)}@{digest[:12]}"

    # Passes, each only over the images where the ones before found nothing: the photo at its own
    # scale; then a wide margin on a small canvas, with the luma histogram equalised (a face that
    # fills its image - aligned crops, lab sets - or one that is dark or lit from the side).
    # Measured on ../shared/data/faces (bench/model_choice.py): SCRFD-500M finds a face in 1,877 of
    # 1,990 photos with the first pass alone (Yale B: 648 of 760) and in 1,987 with both (758).
    PASSES = ((0.0, 0, False), (0.5, 224, True))  # (margin, min_side, equalise)

    def _run(self, batch: np.ndarray) -> list[tuple]:
        x = to_input(batch, self.bgr, self.mean, self.std)
        outs = self._sess.run(None, {self._sess.get_inputs()[0].name: x})
        h, w = batch.shape[1:3]
        return self.decode(outs, self._names, h, w)

    def detect_batch(self, imgs: list[np.ndarray]) -> list[Faces]:
        found: list[tuple | None] = [None] * len(imgs)
        todo = list(range(len(imgs)))
        for margin, min_side, equalise in self.PASSES:
            groups: dict[tuple[int, int], list[tuple[int, Placement]]] = {}
            for i in todo:
                p = input_plan(*imgs[i].shape[:2], self.max_side, margin, min_side)
                groups.setdefault((p.h, p.w), []).append((i, p))
            for (h, w), members in groups.items():
                step = max(1, min(self.batch_limit, 64, self.batch_pixels // (h * w)))
                for s in range(0, len(members), step):
                    chunk = members[s : s + step]
                    canvas = np.stack([place(equalised(imgs[i]) if equalise else imgs[i], p, 0) for i, p in chunk])
                    for (i, p), (boxes, kps, scores) in zip(chunk, self._run(canvas)):
                        if len(scores):
                            off = np.array([p.x, p.y], np.float32)
                            boxes = (boxes - np.tile(off, 2)) / p.scale
                            found[i] = (boxes, (kps - off) / p.scale, scores)
            todo = [i for i in todo if found[i] is None]
            if not todo:
                break
        out = []
        for f in found:
            if f is None:
                out.append(Faces.empty())
                continue
            boxes, kps, scores = f
            keep = nms(boxes, scores, self.nms_iou)
            out.append(Faces(boxes[keep].astype(np.float32), kps[keep].astype(np.float32), scores[keep].astype(np.float32)))
        return out
