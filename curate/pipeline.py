"""The stages chained over one batch, and one shard processed end to end. No Ray, no Prefect:
``flows/`` maps ``process_shard`` over shards; tests and the benchmark call it directly."""

from __future__ import annotations

import functools
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from curate.config import Resources, RunConfig
from curate.io.shards import ShardStore
from curate.io.sources import Source
from curate.schema import Reason, conform, detections_schema, images_schema
from curate.stages.align import align
from curate.stages.decode import decode
from curate.stages.detect import detect, pick
from curate.stages.embed import embed
from models import DETECTORS, RECOGNIZERS


@dataclass
class Models:
    detector: object
    recognizer: object


def load_models(cfg: RunConfig, allow_download: bool = False, gpu: bool = False, threads: int = 0) -> Models:
    """Build detector and recognizer once (per worker). ``threads``: onnxruntime threads per model
    (a Ray worker or an in-process lane passes the cores it owns; 0 = all cores)."""
    d = cfg.detect
    detector = DETECTORS.build(
        d.detector, upsample=d.upsample, min_score=d.min_score, det_size=d.det_size,
        allow_download=allow_download, gpu=gpu, threads=threads,
    )
    recognizer = RECOGNIZERS.build(cfg.embed.recognizer, allow_download=allow_download, gpu=gpu, threads=threads)
    return Models(detector, recognizer)


STAGES = ("read", "decode", "detect", "align", "embed")  # seconds per stage, summed over batches


CUES = ("sharpness", "brightness", "contrast", "detail")
DETAIL_BANDS = (1, 8, 20)  # cycles across the crop: coarse from the first to the second, fine to the third


@functools.lru_cache(maxsize=4)
def _bands(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the coarse and fine bands over an rfft2 spectrum of a size x size image, each
    half-plane frequency counted twice where its mirror is not stored."""
    fy, fx = np.fft.fftfreq(size) * size, np.fft.rfftfreq(size) * size
    r = np.hypot(fy[:, None], fx[None, :])
    twice = np.where((fx == 0) | (fx == size / 2), 1.0, 2.0)[None, :]
    lo, mid, hi = DETAIL_BANDS
    return ((r > lo) & (r <= mid)) * twice, ((r > mid) & (r < hi)) * twice


def pixel_cues(raw: bytes, size: int) -> tuple[float, float, float, float]:
    """``CUES`` of a raw RGB crop: variance of the Laplacian, mean and standard deviation of the gray
    image, and its fine detail: the spectral energy of the gray image in the band where a face's
    eyes, nose and mouth are resolved (8-20 cycles across the crop) over the coarse band below it
    (1-8): low where the face is blurred, or a thumbnail brought back up, at any contrast. Classic
    quality cues, independent of any model."""
    gray = cv2.cvtColor(np.frombuffer(raw, np.uint8).reshape(size, size, 3), cv2.COLOR_RGB2GRAY)
    power = np.abs(np.fft.rfft2(gray.astype(np.float32))) ** 2
    coarse, fine = _bands(size)
    c = float((power * coarse).sum())
    detail = float((power * fine).sum()) / c if c > 0 else 0.0
    return float(cv2.Laplacian(gray, cv2.CV_64F).var()), float(gray.mean()), float(gray.std()), detail


def _jpeg(raw: bytes, size: int, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.frombuffer(raw, np.uint8).reshape(size, size, 3)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def curate_batch(fetched: pa.Table, models: Models, cfg: RunConfig, res: Resources,
                 times: dict[str, float] | None = None) -> tuple[pa.Table, pa.Table]:
    """Fetched bytes -> (images rows, detections rows) conforming to the shard schemas.
    Seconds per stage are added to ``times`` when given."""
    t = times if times is not None else dict.fromkeys(STAGES, 0.0)
    t0 = time.perf_counter()
    images = decode(fetched, cfg.decode)
    t["decode"] += time.perf_counter() - t0
    return curate_decoded(images, models, cfg, res, t)


def curate_decoded(images: pa.Table, models: Models, cfg: RunConfig, res: Resources,
                   times: dict[str, float]) -> tuple[pa.Table, pa.Table]:
    """Decoded images -> detect, align, embed -> (images rows, detections rows)."""
    clock = time.perf_counter
    t1 = clock()
    faces = detect(images, models.detector, cfg.detect)
    images, faces = pick(images, faces, cfg.detect)
    t2 = clock()
    rec = models.recognizer
    faces = align(faces, images, cfg.align, (rec.template, rec.size))
    t3 = clock()
    faces = embed(faces, rec, res.batch_size)
    t4 = clock()
    for k, a, b in (("detect", t1, t2), ("align", t2, t3), ("embed", t3, t4)):
        times[k] += b - a
    return _assemble(images, faces, cfg, models)


def _assemble(images: pa.Table, faces: pa.Table, cfg: RunConfig, models: Models) -> tuple[pa.Table, pa.Table]:
    dim = models.recognizer.dim
    size, q = cfg.align.size, cfg.align.jpeg_quality
    # every face's cues; a JPEG crop for the chosen face, and for each face of a group photo (scoring
    # may pick another one there)
    raw = faces["crop"].to_pylist()
    cues = np.array([pixel_cues(c, size) for c in raw], np.float32).reshape(-1, len(CUES))
    n_of = {k: n for k, n in zip(images["image_id"].to_pylist(), images["n_faces"].to_pylist())}
    group = np.array([(n_of.get(k) or 0) > 1 for k in faces["image_id"].to_pylist()], bool)
    selected = np.asarray(faces["selected"].to_numpy(zero_copy_only=False), bool)
    jpegs = pa.array([_jpeg(c, size, q) if (s or g) else None for c, s, g in zip(raw, selected, group)], pa.binary())
    faces = faces.drop_columns(["crop"]).append_column("crop", jpegs)
    for j, col in enumerate(CUES):
        faces = faces.append_column(col, pa.array(cues[:, j], pa.float32()))
    chosen = faces.filter(faces["selected"])
    pos = {k: i for i, k in enumerate(chosen["image_id"].to_pylist())}
    take = pa.array([pos.get(k) for k in images["image_id"].to_pylist()], pa.int64())
    out = images.drop_columns(["pixels"])
    for col in ("det_score", "bbox", "landmarks", "face_size", "embedding", "feat_norm", "model_id", "crop", *CUES):
        out = out.append_column(col, chosen[col].take(take))
    out = out.append_column("detector_id", pa.array([models.detector.id] * len(out), pa.string()))
    # a chosen face whose embedding came out non-finite: the model, not the image, failed
    broken = pc.and_(pc.is_null(out["reason"]), pc.and_(pc.is_valid(out["face_idx"]), pc.is_null(out["embedding"])))
    if pc.any(broken).as_py():
        reason_i = out.schema.get_field_index("reason")
        detail_i = out.schema.get_field_index("reason_detail")
        out = out.set_column(reason_i, "reason", pc.if_else(broken, Reason.EMBED_ERROR.value, out["reason"]))
        out = out.set_column(detail_i, "reason_detail", pc.if_else(
            broken, f"{models.recognizer.id} returned a NaN, Inf or zero feature", out["reason_detail"]))
    keep = pc.is_null(out["reason"])
    out = out.append_column("keep", keep)
    out = out.set_column(out.schema.get_field_index("reason"), "reason", pc.fill_null(out["reason"], Reason.OK.value))
    faces = faces.set_column(faces.schema.get_field_index("crop"), "crop",
                             pc.if_else(pa.array(group), faces["crop"], pa.nulls(len(faces), pa.binary())))
    return conform(out, images_schema(dim)), conform(faces, detections_schema(dim))


def process_shard(store: ShardStore, source: Source, shard: int, models: Models, cfg: RunConfig,
                  res: Resources, on_batch: Callable[[int], None] | None = None) -> dict:
    """Curate one shard and commit it (temp files, rename, marker last). Returns the marker.
    ``on_batch(n)`` is told after each batch of n images (progress; nothing is committed yet).
    The next batch is read and decoded in a second thread while this one goes through the models
    (decoding releases the GIL): the models never wait for a batch's files."""
    times = dict.fromkeys(STAGES, 0.0)
    index = store.shard_index(shard)

    def read_decode(s: int) -> tuple[pa.Table, float, float]:
        t0 = time.perf_counter()
        fetched = source.fetch(index.slice(s, res.batch_size), cfg.decode.max_bytes)
        t1 = time.perf_counter()
        return decode(fetched, cfg.decode), t1 - t0, time.perf_counter() - t1

    images, detections = [], []
    starts = range(0, len(index), res.batch_size)
    with ThreadPoolExecutor(1, thread_name_prefix="decode") as pool:
        ahead = pool.submit(read_decode, starts[0]) if len(starts) else None
        for k in range(len(starts)):
            decoded, read_s, decode_s = ahead.result()
            ahead = pool.submit(read_decode, starts[k + 1]) if k + 1 < len(starts) else None
            times["read"] += read_s
            times["decode"] += decode_s
            im, det = curate_decoded(decoded, models, cfg, res, times)
            images.append(im)
            detections.append(det)
            if on_batch:
                on_batch(len(im))
    dim = models.recognizer.dim
    images_t = pa.concat_tables(images) if images else images_schema(dim).empty_table()
    det_t = pa.concat_tables(detections) if detections else detections_schema(dim).empty_table()
    return store.commit(shard, images_t, det_t, extra={"seconds": times})  # adds "write"
