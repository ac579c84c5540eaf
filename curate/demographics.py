"""Attach demographic attributes to a run: ``OUT/attributes/<source>.parquet`` (schema
``ATTRIBUTES``), which the ``attributes`` view and the demographic audits read."""

from __future__ import annotations

import os
import re

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import InputError
from curate.files import atomic_write
from curate.io.shards import ShardStore
from curate.schema import ATTRIBUTES
from curate.stages import attributes


def _store(out: str) -> ShardStore:
    store = ShardStore.of(out)
    if not store.completed_files("images"):
        raise InputError(f"{out}: no completed shards yet")
    return store


def _save(store: ShardStore, name: str, table: pa.Table) -> dict:
    d = store.attributes_dir()
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".parquet")
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    store.write_views()
    counts = table.group_by("attribute").aggregate([("image_id", "count_distinct")]).to_pylist()
    return {"path": path, "rows": len(table), "images": {r["attribute"]: r["image_id_count_distinct"] for r in counts}}


def read_metadata(path: str) -> pa.Table:
    if not os.path.isfile(path):
        raise InputError(f"{path}: metadata file not found")
    try:
        if path.endswith(".parquet"):
            t = pq.read_table(path)
        else:
            import pyarrow.csv as pacsv

            t = pacsv.read_csv(path, read_options=pacsv.ReadOptions(encoding="utf8"),
                               convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: cannot read metadata: {exc}") from exc
    return t.cast(pa.schema([(c, pa.string()) for c in t.column_names]))


def add_metadata(out: str, path: str, key: str = "identity") -> dict:
    """Join crawl metadata (one row per identity, image_id or source) onto every image of the run."""
    store = _store(out)
    images = pq.ParquetDataset(store.completed_files("images")).read(columns=["image_id", "identity", "source"])
    name = os.path.splitext(os.path.basename(path))[0]
    table = attributes.from_metadata(images, read_metadata(path), key, f"metadata:{os.path.basename(path)}")
    return _save(store, f"metadata-{name}", table)


def add_model(out: str, model, batch_size: int = 256) -> dict:
    """Run an attribute model (models.attributes.OnnxAttributes) over the stored aligned crops."""
    store = _store(out)
    parts = []
    for f in store.completed_files("images"):
        for b in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=["image_id", "identity", "crop"]):
            parts.append(attributes.from_model(pa.Table.from_batches([b]), model))
    table = pa.concat_tables(parts) if parts else ATTRIBUTES.empty_table()
    return _save(store, f"model-{model.id}", table)
