"""Model code: detectors (models/detectors/, one module a family), recognizers, alignment
templates and model cards, run with onnxruntime; backbones, margin heads, training, evaluation and
export (torch, imported only there). Importing the package registers every detector and recognizer
by name. It imports nothing of curate/ but the leaves (curate.errors, curate.files, curate.stats)."""

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
        card = cards.get(getattr(registry.factory(name), "default_card", name))
        if not arg and card and card.get("package"):
            packaged_path(card)
