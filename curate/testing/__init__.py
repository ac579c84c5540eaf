"""Seeded synthetic data and tiny real models for the tests and the benchmarks: ``synth``
(synthetic identity crops and embedded crawls), ``tiny_models`` (an SCRFD-shaped detector and an
ArcFace-shaped recognizer as real ONNX files), ``bad_inputs`` (a corpus of broken and odd inputs),
``fuzz`` (files made from real photos and mutated), ``faults`` (crash drills of `curate run`).
Importable, so that bench/ needs no path tricks. Test tools only: the pipeline never imports it."""

from curate.sample import shared_faces  # noqa: F401  (real faces for tests and benchmarks; may be absent)
