"""Seeded synthetic data and tiny real models for the tests and the benchmarks: ``synth``
(synthetic identity crops and embedded crawls), ``tiny_models`` (an SCRFD-shaped detector and an
ArcFace-shaped recognizer as real ONNX files), ``bad_inputs`` (a corpus of broken and odd inputs),
``fuzz`` (files made from real photos and mutated), ``faults`` (crash drills of `curate run`).
Importable, so that bench/ needs no path tricks. Test tools only: the pipeline never imports it."""

import os
from pathlib import Path


def shared_faces() -> Path:
    """``../shared/data/faces`` beside the checkout (real faces for tests and benchmarks; may be
    absent: tests that need it skip)."""
    return Path(os.environ.get("FACECURATE_FACES") or Path(__file__).resolve().parents[3] / "shared" / "data" / "faces")
