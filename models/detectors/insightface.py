"""A model run by insightface's own code (``insightface:<file | dir | pack>``: RetinaFace, SCRFD
packs); insightface itself lives beside the environment (models/vendor.py)."""

from __future__ import annotations

import glob
import os

import numpy as np

from curate.errors import MissingDependency, ModelError
from models.cards import file_sha256, verified_sha256
from models.detectors.base import Detector, Faces
from models.registry import DETECTORS
from models.vendor import VENDOR, import_vendored


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
