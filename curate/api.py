"""Score embeddings you already have: the scorer of ``curate score`` on arrays, with no image, no
detector and no model run (``facecurate.score_embeddings`` is this function).

    import facecurate
    flags = facecurate.score_embeddings(emb, labels)                   # numpy (N, D), labels (N,)
    flags = facecurate.score_embeddings(emb, labels, reference=(ref_emb, ref_labels))
    flags.filter(flags["keep"])                                        # an Arrow table

The rows become spine rows (one face per row, identity = label) and go through the partitioned
scorer exactly as a run's do, in a temporary directory, partition by partition, so 10M rows from a
memory-mapped ``.npy`` take the partitioned scorer's memory, not the whole matrix's many copies.

Thresholds, in order: ``options`` (``far_angle=``, ``dup_threshold=``, ...: ScoreConfig's fields),
``card`` (a model card path or dict from ``curate calibrate``), ``reference`` (a small labelled
set of *your* embeddings, calibrated by the rules of ``curate calibrate``), else estimated from
the data itself with the warning the CLI gives. Quality: ``norms`` (raw, pre-normalisation feature
norms; taken from the rows when they are not unit length) as reference percentiles; with no norm,
quality is null and nothing is rejected as unidentifiable.

Stable: ``score_embeddings``, its arguments and the columns it returns (``COLUMNS``), through
``facecurate``. Everything else in ``curate.*`` is internal and may change between releases.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.config import ScoreConfig
from curate.errors import ConfigError, InputError
from curate.schema import encode_embeddings

COLUMNS = ("image_id", "identity", "keep", "reason", "label", "merged_from", "quality", "quality_rank", "subcenter",
           "is_dominant", "angle_to_dominant", "dominant_share", "own_sim", "other_sim", "nearest_other_identity",
           "dup_of", "dup_sim", "near_identical_of", "unmatched_copy_of", "merge_into")  # and is_<reason> for every reason
CHUNK = 250_000  # rows per temporary shard (the partitioned scorer's partition size)


def _matrix(x) -> np.ndarray:
    """(N, D) float32 from a NumPy array (memory-mapped too), an Arrow list / fixed-size-list column
    or a table's ``embedding`` column."""
    if isinstance(x, pa.Table):
        x = x["embedding"]
    if isinstance(x, (pa.ChunkedArray, pa.Array)):
        x = x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x
        if pa.types.is_fixed_size_binary(x.type):
            from curate.schema import decode_embeddings

            return decode_embeddings(x).astype(np.float32)
        x = np.asarray(x.to_numpy(zero_copy_only=False).tolist(), np.float32)
    if not hasattr(x, "ndim"):
        x = np.asarray(x, np.float32)
    if x.ndim != 2 or not len(x) or x.shape[1] < 2:
        raise InputError(f"embeddings: expected an (N, D) matrix with N >= 1 and D >= 2, got shape {tuple(x.shape)}")
    return x


def _strings(x, n: int, what: str) -> pa.Array:
    a = x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x if isinstance(x, pa.Array) else \
        pa.array([None if v is None else str(v) for v in np.asarray(x, object).tolist()], pa.string())
    a = a.cast(pa.string())
    if len(a) != n:
        raise InputError(f"{what}: {len(a)} values for {n} embeddings")
    return a


def norms_of(x) -> np.ndarray | None:
    """The rows' norms, unless they are unit rows (normalised already: no quality in them)."""
    head = np.asarray(x[:10_000], np.float32)
    if np.allclose(np.sqrt(np.einsum("nd,nd->n", head, head)), 1.0, atol=1e-2):
        return None
    return np.concatenate([np.sqrt(np.einsum("nd,nd->n", c, c)) for c in
                           (np.asarray(x[a : a + CHUNK], np.float32) for a in range(0, len(x), CHUNK))])


def _calibration(card, reference, detector: str | None = None) -> tuple[dict | None, list[str]]:
    from curate.stats import calibrate
    from models.cards import pick_calibration, read_card

    if card is not None:
        c = read_card(card) if isinstance(card, (str, os.PathLike)) else card
        if "calibrations" in c:
            cal, warning = pick_calibration(c, detector if detector else next(iter(c["calibrations"]), None))
            return cal, [warning] if warning else []
        return c, []  # a calibration itself
    if reference is not None:
        ref_emb, ref_labels = reference
        ref = _matrix(ref_emb)
        labels = _strings(ref_labels, len(ref), "reference labels").to_pylist()
        if len(set(labels)) < 3 or len(ref) < 20:
            raise InputError(f"reference: {len(ref)} embeddings of {len(set(labels))} identities; a calibration needs "
                             "at least 20 of 3 identities")
        norms = norms_of(ref)
        cal = calibrate(ref, norms if norms is not None else np.ones(len(ref)), labels)
        return cal, [f"reference: {w}" for w in cal.get("warnings", [])]
    return None, []


SIGNALS = ("det_score", "sharpness", "brightness", "contrast", "detail", "face_size", "landmarks")


def check_signals(signals: dict | None, n: int) -> dict[str, np.ndarray]:
    extra = dict(signals or {})
    if set(extra) - set(SIGNALS):
        raise InputError(f"signals: unknown {sorted(set(extra) - set(SIGNALS))}; known: {', '.join(SIGNALS)}")
    for k, v in extra.items():
        extra[k] = np.asarray(v, np.float32)
        if len(extra[k]) != n or (k == "landmarks" and extra[k].shape[1:] != (10,)):
            raise InputError(f"signals[{k!r}]: shape {extra[k].shape} for {n} embeddings")
    return extra


def spine_rows(ids: pa.Array, label: pa.Array, emb, raw: np.ndarray | None, extra: dict, a: int, b: int) -> pa.Table:
    """Rows a..b as the spine would have written them for one face a row (no photo: no crop, no
    hash, no bytes): what the scorer reads."""
    m = b - a

    def column(k: str) -> pa.Array:
        if k == "landmarks":
            return (pa.FixedSizeListArray.from_arrays(pa.array(extra[k][a:b].ravel()), 10).cast(pa.list_(pa.float32(), 10))
                    if k in extra else pa.nulls(m, pa.list_(pa.float32(), 10)))
        return pa.array(extra[k][a:b], pa.float32()) if k in extra else pa.nulls(m, pa.float32())

    x = np.asarray(emb[a:b], np.float32)
    return pa.table({
        "image_id": ids.slice(a, m), "identity": label.slice(a, m), "sha1": ids.slice(a, m),
        "embedding": encode_embeddings(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)),
        "feat_norm": pa.array(raw[a:b], pa.float32()) if raw is not None else pa.array(np.ones(m, np.float32)),
        "model_id": pa.array(["embeddings"] * m), **{k: column(k) for k in SIGNALS},
        "keep": pa.array(np.ones(m, bool)), "reason": pa.array(["ok"] * m), "n_faces": pa.array(np.ones(m, np.int16)),
        "face_idx": pa.array(np.zeros(m, np.int16)),
    })


def score_embeddings(embeddings, labels, *, image_ids=None, norms=None, signals=None, card=None, detector=None,
                     reference=None, pandas: bool = False, **options):
    """Label noise, duplicates, merged identities and quality of faces you embedded yourself.

    ``embeddings``: (N, D) NumPy array (``np.load(..., mmap_mode="r")`` works), Arrow list column or
    a table with an ``embedding`` column; ``labels``: (N,) identity of each row; ``image_ids``:
    (N,) keys (default ``row<i>``); ``norms``: (N,) raw feature norms (default: the rows' own norms
    when they are not unit length); ``signals``: other quality signals per row, by name (SIGNALS:
    the detector score, crop sharpness, brightness, contrast, detail (curate.pipeline.pixel_cues), face size in
    px, (N, 10) landmarks),
    which a card's quality model may use; ``card`` / ``reference`` / ``options``: where thresholds
    come from (module doc); ``detector``: which of a card's calibrations (they are per detector;
    default its first). Without photos a re-saved copy cannot be told from a near-identical
    shot: both are ``near_identical_of`` (kept; ``drop_near_identical=True`` keeps the best). -> an Arrow table (pandas with ``pandas=True``), one row per input row in
    its order, with ``COLUMNS`` and the ``is_<reason>`` flags."""
    from curate import partitioned as P
    from curate import reviews as R

    fields = set(ScoreConfig.__dataclass_fields__)
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}; known: {', '.join(sorted(fields))}")
    cfg = ScoreConfig(**options)
    emb = _matrix(embeddings)
    n = len(emb)
    label = _strings(labels, n, "labels")
    ids = _strings(image_ids, n, "image_ids") if image_ids is not None else pa.array([f"row{i}" for i in range(n)])
    if len(pc.unique(ids)) != n:
        raise InputError("image_ids: keys repeat; each row needs its own")

    raw = np.asarray(norms, np.float32) if norms is not None else norms_of(emb)
    if raw is not None and len(raw) != n:
        raise InputError(f"norms: {len(raw)} values for {n} embeddings")
    cal, cal_warnings = _calibration(card, reference, detector)
    extra = check_signals(signals, n)
    with tempfile.TemporaryDirectory(prefix="facecurate-embeddings-") as d:
        files = []
        for s, a in enumerate(range(0, n, CHUNK)):
            f = os.path.join(d, f"part-{s:06d}.parquet")
            pq.write_table(spine_rows(ids, label, emb, raw, extra, a, min(a + CHUNK, n)), f)
            files.append((s, f))
        os.makedirs(os.path.join(d, "curated"))
        work, calib, _ = P.score_partitioned(os.path.join(d, "work"), d, files, cfg, cal, R.REVIEWS.empty_table(),
                                             "embeddings")
        P.stream_outputs(work, os.path.join(d, "scores.parquet"), os.path.join(d, "identities.parquet"))
        scores = pq.read_table(os.path.join(d, "scores.parquet"))
    for w in cal_warnings + calib["warnings"]:
        warnings.warn(w, stacklevel=2)
    if raw is None:  # no norm: quality means nothing here
        scores = scores.set_column(scores.schema.get_field_index("quality"), "quality", pa.nulls(len(scores), pa.float32()))
    drop = [c for c in ("spine_reason", "auto_keep", "auto_reason", "review", "face_idx", "group_pick", "yaw", "pitch",
                        "roll", "sharpness", "sharpness_pct", "det_score", "det_score_pct", "face_size", "norm_pct")
            if c in scores.column_names]
    scores = scores.drop_columns(drop)
    return scores.to_pandas() if pandas else scores
