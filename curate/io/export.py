"""Exports of a curated run that trainers read: the kept rows' aligned 112x112 crops, grouped by
identity, with dense class labels 0..C-1 (identities sorted by name).

``rec``         MXNet RecordIO as insightface's arcface_torch reads it, written without mxnet:
                ``train.rec`` + ``train.idx`` + ``property`` ("C,112,112"). Record 0 is the header
                (labels: N+1, N+1+C), records 1..N the images (label = class), records N+1.. one
                per identity (labels: first key, end key).
``webdataset``  tar shards ``shard-000000.tar``: ``<image_id>.jpg``, ``.cls`` (class), ``.json``.
``fiftyone``    every image of the run, kept and rejected, for looking at in FiftyOne
                (curate.io.fo_export); not a training set.
``hf``          a Hugging Face ``datasets`` folder: ``data/train-NNNNN-of-MMMMM.parquet`` with an
                ``image`` column (``{bytes, path}``), ``label`` (a ClassLabel of the identities),
                ``identity``, ``image_id``, ``quality``, and ``README.md``, the dataset card with its
                ``dataset_info``: ``datasets.load_dataset(DEST)`` loads it with those features, and
                ``huggingface-cli upload NAME DEST --repo-type dataset`` shares it.
``folders``     ``<folder>/<folder>_0001.jpg`` ... best quality first, as LFW lays out its
                images, so an LFW-style ``pairs.txt`` (``name i j`` / ``name1 i name2 j``) over the
                export works with ``curate retrain --eval-pairs``; identity labels are made safe as
                folder names (no separators, no '..', no hidden names), with the mapping in
                ``labels.tsv``, and ``manifest.parquet`` gives each file's image_id (its ``file``).

Every export also writes ``labels.tsv`` (class, folder, identity) and ``manifest.parquet`` (one row
per exported image: key, image_id, identity, label, quality, and the file for folder exports). The export is built under a temporary
name beside DEST and renamed into place, so DEST is either complete or absent.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import ConfigError, InputError, OutputError
from curate.io import recordio
from curate.io.shards import ShardStore

FORMATS = ("rec", "webdataset", "folders", "hf", "fiftyone")


def safe_name(label: str) -> str:
    """A crawl label as one safe path component: word characters (unicode letters kept), '.', '-'."""
    s = re.sub(r"[^\w.-]+", "_", label or "", flags=re.UNICODE).strip("._") or "_"
    return s[:120]


def _curated(out: str, scores: str | None) -> tuple[str, list[str]]:
    """(digest, curated shard files) of the scoring ``scores`` (default: the current one)."""
    store = ShardStore.of(out)
    digest = store.resolve_scoring(scores)
    files = store.view_files(digest).get("curated") if digest else None
    if not files:
        raise InputError(f"{out}: not scored yet (run `curate score {out}`)")
    return digest, files


def _rows(out: str, min_quality: float | None, batch_rows: int, tmp: str, scores: str | None = None,
          exclude: list[str] | None = None, shuffle: int | None = None, exclude_images: list[str] | None = None):
    """(count, identities, batch reader) of the kept rows in identity order (``shuffle``: in the
    order of a seeded hash of the image ids), streamed by DuckDB (it sorts out of core, spilling
    under ``tmp``). ``scores``: a scoring digest (default: the current one)."""
    import duckdb

    digest, files = _curated(out, scores)
    con = duckdb.connect(":memory:")
    con.execute(f"SET temp_directory = '{tmp.replace(chr(39), chr(39) * 2)}'")
    con.execute("SET preserve_insertion_order = false")
    where = ("keep AND crop IS NOT NULL" + (" AND quality >= $q" if min_quality is not None else "")
             + (" AND NOT list_contains($exclude, identity)" if exclude else "")
             + (" AND NOT list_contains($exclude_images, image_id)" if exclude_images else ""))
    params = {"files": files, **({"q": float(min_quality)} if min_quality is not None else {}),
              **({"exclude": sorted(exclude)} if exclude else {}),
              **({"exclude_images": sorted(exclude_images)} if exclude_images else {})}
    cols = {r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet($files)", {"files": files}).fetchall()}
    label = "coalesce(label, identity)" if "label" in cols else "identity"  # a reviewer's relabel wins
    base = f"FROM read_parquet($files) WHERE {where}"
    n, c = con.execute(f"SELECT count(*), count(DISTINCT {label}) {base}", params).fetchone()
    if n == 0:
        cropless = con.execute("SELECT count(*) FROM read_parquet($files) WHERE keep AND crop IS NULL", {"files": files}).fetchone()[0]
        con.close()
        if cropless:
            raise InputError(f"{out}: its {cropless} kept faces have no crop (a run of embeddings has no photos): "
                             f"nothing to export; its decisions are in `curate sql {out} \"SELECT image_id, label, keep, "
                             "reason FROM curated\" --format csv`")
        why = f" with quality >= {min_quality}" if min_quality is not None else ""
        raise InputError(f"{out}: no kept face{why} in scoring {digest}: nothing to export")
    ids = [r[0] for r in con.execute(f"SELECT DISTINCT {label} AS l {base} ORDER BY l", params).fetchall()]
    order = "hash(image_id || $seed), image_id" if shuffle is not None else "1, quality_rank, image_id"
    reader = con.sql(f"SELECT {label} AS identity, image_id, crop, quality {base} ORDER BY {order}",
                     params={**params, **({"seed": str(shuffle)} if shuffle is not None else {})}).to_arrow_reader(batch_rows)
    return n, ids, reader, con


def export(out: str, dest: str, fmt: str, min_quality: float | None = None, shard_size: int = 10000,
           batch_rows: int = 4096, scores: str | None = None, exclude: list[str] | None = None,
           shuffle: int | None = None, exclude_images: list[str] | None = None) -> dict:
    """``exclude``: identities left out (e.g. those the leakage check found in an evaluation set),
    ``exclude_images``: faces left out one by one (image ids);
    ``shuffle``: a seed, WebDataset only: samples in a seeded random order over the shards (a
    trainer's shuffle buffer then mixes identities), not identity by identity.

    Class labels are the positions of the folder names in sorted order, as torchvision's
    ``ImageFolder`` numbers the folders export writes: the same label for an identity whatever the
    format."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r}: choose one of {FORMATS}")
    if shuffle is not None and fmt != "webdataset":
        raise ConfigError("--shuffle is for WebDataset exports (a .rec keeps each identity's records together, "
                          "folders have no order)")
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise OutputError(f"{dest} is a file, not a directory; choose a new export directory")
    if os.path.isdir(dest) and os.listdir(dest):
        raise OutputError(f"{dest} exists and is not empty; choose a new export directory")
    tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        os.makedirs(os.path.join(tmp, ".spill"))
    except OSError as exc:
        raise OutputError(f"cannot create {tmp}: {exc.strerror}") from exc
    try:  # built under tmp, renamed into place: DEST is complete or absent
        if fmt == "fiftyone":
            from curate.io import fo_export

            shutil.rmtree(os.path.join(tmp, ".spill"))
            r = {"images": fo_export.write(ShardStore.of(out), _curated(out, scores)[1], tmp), "identities": None}
        else:
            r = _training_set(out, tmp, fmt, min_quality, shard_size, batch_rows, scores, exclude, shuffle,
                              exclude_images)
        if os.path.isdir(dest):
            os.rmdir(dest)  # empty, checked above
        os.replace(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"export to {dest} failed: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"dest": dest, "format": fmt, **r}


def _training_set(out: str, tmp: str, fmt: str, min_quality, shard_size: int, batch_rows: int, scores, exclude,
                  shuffle, exclude_images) -> dict:
    """The kept crops written under ``tmp`` in ``fmt``, with labels.tsv and manifest.parquet."""
    n, ids, reader, con = _rows(out, min_quality, batch_rows, os.path.join(tmp, ".spill"), scores, exclude,
                                shuffle, exclude_images)
    folders = _folders(ids)
    ids = sorted(ids, key=lambda name: folders[name])  # ImageFolder's class order
    label_of = {name: i for i, name in enumerate(ids)}
    writer = {"rec": _Rec, "webdataset": _WebDataset, "folders": _Folders, "hf": _HF}[fmt](tmp, n, len(ids), shard_size,
                                                                                        folders)
    manifest = {k: [] for k in ("key", "image_id", "identity", "label", "quality", "file")}
    key = 0
    for batch in reader:
        for identity, image_id, crop, quality in zip(*(batch.column(i).to_pylist() for i in range(4))):
            key += 1
            file = writer.add(key, label_of[identity], identity, image_id, crop, quality)
            for k, v in zip(manifest, (key, image_id, identity, label_of[identity], quality, file)):
                manifest[k].append(v)
    writer.close()
    con.close()
    shutil.rmtree(os.path.join(tmp, ".spill"), ignore_errors=True)
    with open(os.path.join(tmp, "labels.tsv"), "w", encoding="utf-8") as f:
        f.write("label\tfolder\tidentity\n")
        for name in ids:
            f.write(f"{label_of[name]}\t{folders[name]}\t{json.dumps(name, ensure_ascii=False)}\n")
    pq.write_table(pa.table(manifest, schema=pa.schema([("key", pa.int64()), ("image_id", pa.string()),
                                                       ("identity", pa.string()), ("label", pa.int32()),
                                                       ("quality", pa.float32()), ("file", pa.string())])),
                   os.path.join(tmp, "manifest.parquet"))
    return {"images": n, "identities": len(ids)}


def _folders(ids: list[str]) -> dict[str, str]:
    out, used = {}, {"labels.tsv", "manifest.parquet"}  # the export's own files
    for name in ids:
        f = safe_name(name)
        if f in used:
            i = 2
            while f"{f}-{i}" in used:
                i += 1
            f = f"{f}-{i}"
        used.add(f)
        out[name] = f
    return out


class _Rec:
    def __init__(self, d, n, c, _shard_size, _folders):
        self.n, self.c = n, c
        self.w = recordio.RecordIOWriter(os.path.join(d, "train.rec"), os.path.join(d, "train.idx"))
        self.w.write(0, recordio.pack(recordio.IRHeader(2, (float(n + 1), float(n + 1 + c)), 0, 0), b""))
        self.ranges: dict[int, list[int]] = {}
        with open(os.path.join(d, "property"), "w") as f:
            f.write(f"{c},112,112\n")

    def add(self, key, label, identity, image_id, crop, quality):
        self.w.write(key, recordio.pack(recordio.IRHeader(0, float(label), key, 0), crop))
        r = self.ranges.setdefault(label, [key, key + 1])
        r[1] = key + 1

    def close(self):
        for label in range(self.c):
            a, b = self.ranges[label]
            self.w.write(self.n + 1 + label, recordio.pack(recordio.IRHeader(2, (float(a), float(b)), 0, 0), b""))
        self.w.close()


class _WebDataset:
    def __init__(self, d, _n, _c, shard_size, _folders):
        self.d, self.size, self.count, self.shard, self.tar = d, shard_size, 0, 0, None

    def _member(self, name, data):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def add(self, key, label, identity, image_id, crop, quality):
        if self.tar is None or self.count == self.size:
            if self.tar is not None:
                self.tar.close()
                self.shard += 1
            self.tar = tarfile.open(os.path.join(self.d, f"shard-{self.shard:06d}.tar"), "w", format=tarfile.USTAR_FORMAT)
            self.count = 0
        self._member(f"{image_id}.jpg", crop)
        self._member(f"{image_id}.cls", str(label).encode())
        meta = {"identity": identity, "image_id": image_id, "label": label, "quality": quality}
        self._member(f"{image_id}.json", json.dumps(meta, ensure_ascii=False).encode())
        self.count += 1

    def close(self):
        if self.tar is not None:
            self.tar.close()


class _Folders:
    def __init__(self, d, _n, _c, _shard_size, folders):
        self.d, self.folders, self.count = d, folders, {}

    def add(self, key, label, identity, image_id, crop, quality):
        name = self.folders[identity]
        folder = os.path.join(self.d, name)
        if name not in self.count:
            os.makedirs(folder)
        self.count[name] = k = self.count.get(name, 0) + 1  # rows arrive best quality first
        with open(os.path.join(folder, f"{name}_{k:04d}.jpg"), "wb") as f:
            f.write(crop)
        return f"{name}/{name}_{k:04d}.jpg"

    def close(self):
        pass


class _HF:
    """Parquet shards and a dataset card that Hugging Face ``datasets`` loads (module doc)."""

    SCHEMA = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("label", pa.int64()),
                        ("identity", pa.string()), ("image_id", pa.string()), ("quality", pa.float32())])

    def __init__(self, d, n, c, shard_size, folders):
        self.d, self.n, self.size = d, n, max(shard_size, 1)
        self.names = sorted(folders, key=lambda name: folders[name])  # label order (export's)
        self.shards = max(1, -(-n // self.size))
        self.rows: list[dict] = []
        self.shard = 0
        os.makedirs(os.path.join(d, "data"))
        features = {"image": {"_type": "Image"}, "label": {"names": self.names, "_type": "ClassLabel"},
                    "identity": {"dtype": "string", "_type": "Value"}, "image_id": {"dtype": "string", "_type": "Value"},
                    "quality": {"dtype": "float32", "_type": "Value"}}
        self.schema = self.SCHEMA.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})

    def add(self, key, label, identity, image_id, crop, quality):
        self.rows.append({"image": {"bytes": crop, "path": f"{image_id}.jpg"}, "label": label, "identity": identity,
                          "image_id": image_id, "quality": quality})
        if len(self.rows) == self.size:
            self._flush()

    def _flush(self):
        if self.rows:
            name = f"train-{self.shard:05d}-of-{self.shards:05d}.parquet"
            pq.write_table(pa.Table.from_pylist(self.rows, schema=self.schema), os.path.join(self.d, "data", name))
            self.shard += 1
            self.rows = []

    def close(self):
        self._flush()
        names = "\n".join(f"          '{i}': {json.dumps(name, ensure_ascii=False)}" for i, name in enumerate(self.names))
        card = f"""---
dataset_info:
  features:
  - name: image
    dtype: image
  - name: label
    dtype:
      class_label:
        names:
{names}
  - name: identity
    dtype: string
  - name: image_id
    dtype: string
  - name: quality
    dtype: float32
  splits:
  - name: train
    num_examples: {self.n}
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---

# Curated face crops

Aligned 112x112 face crops kept by facecurate: {self.n} images of {len(self.names)} identities. `label` is
the identity's class (names sorted as torchvision's ImageFolder sorts the folder export's), `quality`
the recognizer's chance (percent) of matching the face. Same terms as the crawl it was curated from.
"""
        with open(os.path.join(self.d, "README.md"), "w", encoding="utf-8") as f:
            f.write(card)
