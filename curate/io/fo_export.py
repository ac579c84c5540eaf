"""``curate export --format fiftyone``: every image of a run (kept and rejected) as a FiftyOne
dataset directory, to look at the curation in the FiftyOne App:

    import fiftyone as fo
    ds = fo.Dataset.from_dir("DEST", dataset_type=fo.types.LegacyFiftyOneDataset)
    ds.match(F("reason") == "far_from_dominant")

The directory is FiftyOne's ``LegacyFiftyOneDataset`` layout, written without FiftyOne installed:
``data/`` (each photo as the crawl holds it: the original file, or the record's bytes for a .rec,
TSV, tar or Parquet input; the aligned crop where the photo cannot be read again),
``samples.json`` (``{"samples": [sample.to_dict(), ...]}``) and ``metadata.json``. Each sample has
the crawl's label as a ``Classification`` (``ground_truth``), ``label`` (the name it trains under),
``keep``, ``reason``, ``quality``, ``angle_to_dominant``, ``nearest_other_identity``, ``dup_of``,
``near_identical_of``, ``image_id``; the detected faces as ``Detections`` (``faces``, relative
boxes, the detector score as confidence) with the one scoring chose tagged ``chosen``; and the
embedding (for ``fiftyone.brain``), serialised as FiftyOne serialises arrays. A FiftyOne
database is only needed to load it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FIELDS = ("keep", "reason", "label", "quality", "angle_to_dominant", "nearest_other_identity", "dup_of",
          "near_identical_of", "image_id")


def _oid(key: str) -> dict:
    return {"$oid": (key.encode().hex() + "0" * 24)[:24]}


def _array(x: np.ndarray) -> dict:
    buf = io.BytesIO()
    np.save(buf, np.asarray(x), allow_pickle=False)
    return {"$binary": {"base64": base64.b64encode(zlib.compress(buf.getvalue())).decode("ascii"), "subType": "00"}}


def _faces(dets: list[dict], width: int | None, height: int | None, chosen: int | None) -> dict | None:
    if not dets or not width or not height:
        return None
    out = []
    for d in dets:
        x1, y1, x2, y2 = d["bbox"]  # a detector's box may reach past the border: clipped to the photo
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
        out.append({"_id": _oid(f"{d['image_id']}#{d['face_idx']}"), "_cls": "Detection", "attributes": {},
                    "tags": ["chosen"] if d["face_idx"] == chosen else [], "label": "face",
                    "bounding_box": [x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height],
                    "confidence": d["det_score"]})
    return {"_cls": "Detections", "detections": out}


def write(store, files: list[str], dest: str, batch_rows: int = 512) -> int:
    """Write the run's rows (the curated shards ``files``) under ``dest`` (module doc); -> samples."""
    from curate.schema import decode_embeddings

    data = os.path.join(dest, "data")
    os.makedirs(data)
    plan = pq.read_table(store.index_file(), columns=["item", "offset"])
    offset = dict(zip(plan["item"].to_pylist(), plan["offset"].to_pylist()))
    det_files = store.completed_files("detections")
    dets: dict[str, list[dict]] = {}
    for f in det_files:
        for r in pq.read_table(f, columns=["image_id", "face_idx", "bbox", "det_score"]).to_pylist():
            dets.setdefault(r["image_id"], []).append(r)
    source = store.source()
    cols = ["item", "source", "identity", "width", "height", "format", "crop", "embedding", "face_idx", *FIELDS]
    samples = []
    for f in files:
        pf = pq.ParquetFile(f)
        have = [c for c in cols if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=batch_rows, columns=have):
            t = pa.Table.from_batches([batch])
            try:  # the photos as the crawl holds them
                index = pa.table({"item": t["item"], "source": t["source"], "identity": t["identity"],
                                  "offset": pa.array([offset.get(i) for i in t["item"].to_pylist()], pa.int64())})
                fetched = source.fetch(index, 64 << 20)
                photo = dict(zip(fetched["item"].to_pylist(), fetched["data"].to_pylist()))
            except Exception:  # noqa: BLE001 - a photo that moved or broke: its crop stands in
                photo = {}
            emb = decode_embeddings(t["embedding"]) if "embedding" in t.column_names else None
            for k, r in enumerate(t.to_pylist()):
                raw = photo.get(r["item"])
                use_crop = not raw and r.get("crop")
                ext = "jpg" if use_crop or (r.get("format") or "").upper() in ("", "JPEG", "MPO") else \
                    {"PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif"}.get(r["format"].upper(), "img")
                name = f"{r['image_id']}.{ext}"
                blob = r["crop"] if use_crop else raw
                if blob:
                    with open(os.path.join(data, name), "wb") as out:
                        out.write(blob)
                s = {"filepath": f"data/{name}", "tags": ["kept" if r["keep"] else "rejected"], "metadata": None,
                     "ground_truth": {"_id": _oid(r["image_id"]), "_cls": "Classification", "tags": [],
                                      "label": r["identity"]},
                     **{k2: r.get(k2) for k2 in FIELDS}, "photo": "crop" if use_crop else "original" if raw else None}
                faces = None if use_crop else _faces(dets.get(r["image_id"], []), r.get("width"), r.get("height"),
                                                     r.get("face_idx"))
                if faces:
                    s["faces"] = faces
                if emb is not None and np.isfinite(emb[k]).all():
                    s["embedding"] = _array(emb[k].astype(np.float32))
                samples.append(s)
    with open(os.path.join(dest, "samples.json"), "w", encoding="utf-8") as f:
        json.dump({"samples": samples}, f)
    with open(os.path.join(dest, "metadata.json"), "w", encoding="utf-8") as f:
        json.dump({"name": f"facecurate-{os.path.basename(store.out)}", "media_type": "image",
                   "info": {"run": store.out, "kept": int(sum(s["keep"] for s in samples))}}, f)
    return len(samples)
