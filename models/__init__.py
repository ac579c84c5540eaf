"""torch / ONNX model code: detectors, recognizers, alignment templates (and, later, backbones,
margin heads, training). Importing the package registers every model by name."""

from models import detectors, recognizers  # noqa: F401  (registration side effects)
from models.registry import DETECTORS, RECOGNIZERS  # noqa: F401
