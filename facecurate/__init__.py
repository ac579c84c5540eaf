"""facecurate's public Python surface (stable across releases; everything under ``curate.*`` is
internal). The command line, ``curate``, is the other stable surface.

``score_embeddings(embeddings, labels, *, image_ids=None, norms=None, card=None, reference=None,
pandas=False, **options)``: label noise, duplicates, merged identities and quality of faces you
embedded yourself, as an Arrow table (curate.api).
"""

from curate.api import COLUMNS, score_embeddings

__all__ = ["COLUMNS", "score_embeddings"]
