"""embed: aligned chips -> L2-normalised embeddings (float16) + the raw feature norm.

Reads faces (``chip``); adds ``embedding`` (fixed_size_binary(2*D), float16, unit norm),
``feat_norm`` (float32, L2 norm of the raw feature *before* normalisation: the model-specific
quality signal) and ``model_id``. Runs the recognizer in batches of ``batch_size``. A feature with
a NaN or Inf, or all zeros (corrupt weights, a broken export), gets a null embedding and norm, and
the image becomes ``embed_error``: it never passes as a face.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.schema import encode_embeddings, require
from curate.stages.align import crops_of


def normalise(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) raw -> ((N, D) unit vectors, (N,) norms). Zero vectors stay zero."""
    norms = np.linalg.norm(feats.astype(np.float64), axis=1)
    unit = feats / np.where(norms > 0, norms, 1.0)[:, None]
    return unit.astype(np.float32), norms.astype(np.float32)


def embed(faces: pa.Table, recognizer, batch_size: int) -> pa.Table:
    require(faces, ("chip",), "embed")
    chips = crops_of(faces, "chip", recognizer.size)
    feats = [recognizer.embed(chips[s : s + batch_size]) for s in range(0, len(chips), batch_size)]
    raw = np.concatenate(feats) if feats else np.zeros((0, recognizer.dim), np.float32)
    bad = ~np.isfinite(raw).all(axis=1)
    raw[bad] = 0.0
    unit, norms = normalise(raw)
    bad |= norms == 0
    emb = encode_embeddings(unit)
    if bad.any():
        emb = pc.if_else(pa.array(~bad), emb, pa.scalar(None, emb.type))
    return (
        faces.append_column("embedding", emb)
        .append_column("feat_norm", pa.array(norms, pa.float32(), mask=bad))
        .append_column("model_id", pa.array([recognizer.id] * len(faces), pa.string()))
    )
