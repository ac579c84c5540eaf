"""torch / ONNX model code: detectors, recognizers, alignment templates (and, later, backbones,
margin heads, training). Importing the package registers every model by name."""

from models import detectors, recognizers  # noqa: F401  (registration side effects)
from models.registry import DETECTORS, RECOGNIZERS  # noqa: F401


def preflight(detector: str, recognizer: str) -> None:
    """Cheap checks before a run starts (no model is loaded): known names, files present, registry
    packages installed. Raises ConfigError or ModelError naming the fix."""
    import os

    from curate.errors import ModelError
    from models.cards import builtin_cards, packaged_path

    cards = builtin_cards()
    for registry, spec in ((DETECTORS, detector), (RECOGNIZERS, recognizer)):
        name, arg = registry.parse(spec)
        if arg and name != "insightface" and not os.path.isfile(arg):
            raise ModelError(f"{registry.kind} {spec!r}: no such file {arg!r}")
        card = cards.get({"scrfd": "scrfd_500m"}.get(name, name))
        if not arg and card and card.get("package"):
            packaged_path(card)
