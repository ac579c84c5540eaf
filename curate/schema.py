"""The data contract: one Arrow schema per table, shared by stages, Parquet shards and sql/.

Tables
------
``index``       one row per input item, written once by the plan step (the crawl as it was seen).
``images``      one row per input image: decode metadata, the labelled face chosen in it, its
                aligned crop and embedding, and the decision (``keep``, ``reason``).  Every input
                item has exactly one row here, whatever happened to it.
``attributes``  one row per image and demographic attribute (long form), from metadata or a model.
``detections``  one row per detected face (all faces, not only the chosen one), with its embedding,
                cues and, in group photos, its crop: scoring re-picks the labelled face of a group
                photo by its identity's template.

Stages also pass two in-memory columns that never reach a shard: ``data`` (the raw input bytes)
and ``pixels`` (decoded RGB, uint8, row-major HxWx3, shape given by ``width``/``height``).

Units: pixel coordinates are in the decoded, EXIF-oriented image, origin top-left, x right, y down.
"""

from __future__ import annotations

import enum

import numpy as np
import pyarrow as pa

from curate import reasons as _reasons
from curate.errors import SchemaError

BBOX = pa.list_(pa.float32(), 4)  # x1, y1, x2, y2 in pixels
LANDMARKS = pa.list_(pa.float32(), 10)  # 5 points (x, y): left eye, right eye, nose, left/right mouth


# Why a row is (not) kept, as stored; ``ok`` means kept. The spine's reasons, from the registry
# (curate.reasons: stage, label noise, meaning and rule of every reason, the scoring's too).
Reason = enum.Enum("Reason", {"OK": "ok", **{n.upper(): n for n in _reasons.SPINE}}, type=str)


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


def embedding_type(dim: int) -> pa.DataType:
    """float16 x dim, little-endian, L2-normalised, as fixed-size binary (fast to write and read)."""
    return pa.binary(2 * dim)


INDEX = pa.schema(
    [
        _f("item", pa.int64(), "position in the crawl plan, 0..N-1; shard = item // shard_size", False),
        _f("source", pa.string(), "stable locator of the input: path relative to the input root, or 'file.rec#key', 'file.tsv@offset', 'file.parquet#row'", False),
        _f("identity", pa.string(), "crawl label if known at plan time (folders, manifests); else filled at read time"),
        _f("offset", pa.int64(), "byte offset of the record in a container file (.rec, .tsv), else null"),
        _f("resolved", pa.string(), "folders: the real path of a file reached through a link, else null"),
    ]
)

_IMAGE_META = [
    _f("image_id", pa.string(), "stable id: blake2b-128 hex of (source, sha1 of bytes)", False),
    _f("item", pa.int64(), "position in the crawl plan", False),
    _f("identity", pa.string(), "the crawl's label, never rewritten"),
    _f("source", pa.string(), "see index.source", False),
    _f("resolved_path", pa.string(), "the file a folder crawl's source resolved to, where a link led elsewhere; else null"),
    _f("sha1", pa.string(), "sha1 hex of the raw bytes; null when they could not be read"),
    _f("n_bytes", pa.int64(), "size of the raw bytes"),
    _f("format", pa.string(), "container format as decoded (JPEG, PNG, ...)"),
    _f("mode", pa.string(), "pixel mode before conversion to RGB (L, RGBA, CMYK, I;16, P, ...)"),
    _f("width", pa.int32(), "decoded width after EXIF orientation, px"),
    _f("height", pa.int32(), "decoded height after EXIF orientation, px"),
    _f("image_hash", pa.binary(80), "perceptual hashes of the photo (64 and 256 bits) and of its mirror image "
       "(curate.stages.phash)"),
]

_FACE_COLUMNS = [
    _f("det_score", pa.float32(), "detector confidence of the face (scale depends on detector_id)"),
    _f("bbox", BBOX, "face box x1, y1, x2, y2, px"),
    _f("landmarks", LANDMARKS, "5 ArcFace points (x, y) px: left eye, right eye, nose tip, left mouth, right mouth"),
    _f("face_size", pa.float32(), "sqrt of box area, px"),
]


def _embedding_columns(dim: int) -> list[pa.Field]:
    return [
        _f("embedding", embedding_type(dim), f"({dim},) float16, L2-normalised, as fixed-size binary"),
        _f("feat_norm", pa.float32(), "L2 norm of the raw feature before normalisation (model-specific scale)"),
        _f("model_id", pa.string(), "recognizer that produced embedding and feat_norm"),
    ]


def images_schema(dim: int) -> pa.Schema:
    return pa.schema(
        _IMAGE_META
        + [
            _f("n_faces", pa.int16(), "faces detected (0 if not decoded)"),
            _f("face_idx", pa.int16(), "index of the chosen (labelled) face in detections; null if none"),
        ]
        + _FACE_COLUMNS
        + [
            _f("crop", pa.binary(), "aligned 112x112 RGB crop of the chosen face, JPEG bytes"),
            _f("sharpness", pa.float32(), "variance of the Laplacian of the gray crop (before JPEG); low = blurred"),
            _f("brightness", pa.float32(), "mean gray level of the crop, 0-255"),
            _f("contrast", pa.float32(), "standard deviation of the gray crop, 0-255"),
            _f("detail", pa.float32(), "spectral energy of the gray crop (before JPEG) at 8-20 cycles across it over "
               "1-8: the face's features resolved; low = blurred or upscaled"),
        ]
        + _embedding_columns(dim)
        + [
            _f("detector_id", pa.string(), "detector that produced the boxes and landmarks"),
            _f("keep", pa.bool_(), "the decision", False),
            _f("reason", pa.string(), "Reason value; 'ok' when kept", False),
            _f("reason_detail", pa.string(), "human-readable detail behind the reason (error text, score)"),
        ]
    )


def detections_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            _f("image_id", pa.string(), "see images.image_id", False),
            _f("face_idx", pa.int16(), "0..n_faces-1, by decreasing prominence", False),
        ]
        + _FACE_COLUMNS
        + [_f("selected", pa.bool_(), "is this the face the spine chose (the most prominent); scoring may pick "
              "another face of a group photo (scores.face_idx)", False)]
        + _embedding_columns(dim)
        + [
            _f("crop", pa.binary(), "aligned crop of the face, JPEG bytes, for photos with more than one face; else null"),
            _f("sharpness", pa.float32(), "see images.sharpness"),
            _f("brightness", pa.float32(), "see images.brightness"),
            _f("contrast", pa.float32(), "see images.contrast"),
            _f("detail", pa.float32(), "see images.detail"),
        ]
    )


ATTRIBUTES = pa.schema(
    [
        _f("image_id", pa.string(), "see images.image_id", False),
        _f("identity", pa.string(), "the crawl's label"),
        _f("attribute", pa.string(), "attribute name: gender, age_group, or a metadata column name", False),
        _f("value", pa.string(), "the group: 'female', '30-44', a country, ...", False),
        _f("score", pa.float32(), "model confidence of the value (0-1); null for metadata"),
        _f("number", pa.float32(), "numeric prediction behind the group (age in years); else null"),
        _f("source", pa.string(), "where it came from: 'metadata:<file>' or the model id", False),
    ]
)


def require(table: pa.Table, columns: list[str] | tuple[str, ...], stage: str) -> None:
    """Fail at the stage boundary, not three steps later in a query."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise SchemaError(f"{stage}: input lacks columns {missing}; has {table.column_names}")


def encode_embeddings(emb: np.ndarray) -> pa.Array:
    """(N, D) float -> fixed_size_binary(2D) of little-endian float16."""
    emb = np.ascontiguousarray(emb, dtype="<f2")
    n, dim = emb.shape
    return pa.FixedSizeBinaryArray.from_buffers(
        embedding_type(dim), n, [None, pa.py_buffer(emb.tobytes())]
    )


def decode_embeddings(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """fixed_size_binary(2D) -> (N, D) float16, a read-only view of the Arrow buffer when there are
    no nulls (copy before writing); null rows come back as NaN in a copy."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    dim = arr.type.byte_width // 2
    out = np.frombuffer(arr.buffers()[1], dtype="<f2", count=(arr.offset + len(arr)) * dim)
    out = out.reshape(-1, dim)[arr.offset :]  # a read-only view of the Arrow buffer: no copy
    if arr.null_count:
        out = out.copy()
        out[~np.asarray(arr.is_valid())] = np.nan
    return out


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``table`` to ``schema`` (missing nullable columns become nulls)."""
    cols = []
    for field in schema:
        if field.name in table.column_names:
            cols.append(table[field.name].cast(field.type))
        elif field.nullable:
            cols.append(pa.nulls(len(table), field.type))
        else:
            raise SchemaError(f"column {field.name!r} is required by the schema and absent")
    return pa.Table.from_arrays(cols, schema=schema)
