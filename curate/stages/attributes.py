"""attributes: demographic attributes per image, in long form (one row per image and attribute), so
audits group by any attribute without knowing its name.

Two sources, never invented:
- ``from_metadata``: crawl metadata (a CSV or Parquet of gender / country / ethnicity ... per
  identity, or per image_id / source) joined onto the images. Every non-key column is an attribute.
- ``from_model``: an attribute model (insightface genderage or any ONNX classifier) on the stored
  aligned crops.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import InputError
from curate.schema import ATTRIBUTES, conform, require

KEYS = ("identity", "image_id", "source")


def from_metadata(images: pa.Table, meta: pa.Table, key: str, source: str) -> pa.Table:
    """images [image_id, identity, source] x meta [key, attr...] -> ATTRIBUTES rows (empty values skipped)."""
    if key not in KEYS:
        raise InputError(f"metadata key must be one of {KEYS}, got {key!r}")
    if key not in meta.column_names:
        raise InputError(f"metadata has no {key!r} column (columns: {meta.column_names})")
    require(images, ("image_id", "identity", key), "attributes")
    attrs = [c for c in meta.column_names if c != key]
    if not attrs:
        raise InputError(f"metadata has only the key column {key!r}: no attribute to join")
    meta = meta.cast(pa.schema([(c, pa.string()) for c in meta.column_names]))
    keys = meta[key].to_pylist()
    dupes = len(keys) - len(set(keys))
    if dupes:
        raise InputError(f"metadata: {dupes} duplicate {key!r} values; one row per {key} is needed")
    pos = {k: i for i, k in enumerate(keys)}
    img_keys = images[key].to_pylist()
    hit = np.array([k in pos for k in img_keys], bool)
    if len(img_keys) and not hit.any():
        sample = ", ".join(repr(k) for k in keys[:3])
        raise InputError(f"metadata matches none of the run's {len(img_keys)} images by {key!r} (metadata values "
                         f"such as {sample}; the run's such as {img_keys[0]!r}): nothing joined")
    take = pa.array([pos[k] for k, h in zip(img_keys, hit) if h], pa.int64())
    sel = images.filter(pa.array(hit))
    parts = []
    for a in attrs:
        vals = meta[a].take(take)
        ok = pc.and_(pc.is_valid(vals), pc.not_equal(pc.utf8_trim_whitespace(vals.fill_null("")), ""))
        parts.append(pa.table({
            "image_id": sel["image_id"].filter(ok), "identity": sel["identity"].filter(ok),
            "attribute": pa.array([a] * int(pc.sum(ok).as_py() or 0), pa.string()),
            "value": pc.utf8_trim_whitespace(vals.filter(ok)), "source": pa.array([source] * int(pc.sum(ok).as_py() or 0), pa.string()),
        }))
    return conform(pa.concat_tables(parts), ATTRIBUTES)


def from_model(batch: pa.Table, model) -> pa.Table:
    """batch [image_id, identity, crop (JPEG)] -> ATTRIBUTES rows for the rows with a crop."""
    import cv2

    require(batch, ("image_id", "identity", "crop"), "attributes")
    batch = batch.filter(pc.is_valid(batch["crop"]))
    if len(batch) == 0:
        return ATTRIBUTES.empty_table()
    crops = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                      for b in batch["crop"].to_pylist()])
    parts = []
    for name, (values, score, number) in model.predict(crops).items():
        n = len(values)
        parts.append(pa.table({
            "image_id": batch["image_id"], "identity": batch["identity"], "attribute": pa.array([name] * n),
            "value": pa.array(values, pa.string()), "score": pa.array(score, pa.float32(), mask=np.isnan(score)),
            "number": pa.array(number if number is not None else np.full(n, np.nan), pa.float32(),
                               mask=np.isnan(number) if number is not None else np.ones(n, bool)),
            "source": pa.array([model.id] * n),
        }))
    return conform(pa.concat_tables(parts), ATTRIBUTES)
