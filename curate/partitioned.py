"""Scoring out of core: the steps of ``curation.score_table`` run partition by partition, so no
process ever holds more than one partition of a crawl (issue 11: a 10M-face crawl on a 24 GB box).

    split      (per chunk of spine shards)  rows -> identity partitions (hash of the identity); a
                                             uniform sample (quality reference, impostor angles, cells)
    driver     the quality reference (the card's, or the sample's for an uncalibrated model) and,
               for a big run, near-duplicate cells: k-means on the sample, packed into search groups
    identities (per partition)  score_identities: sub-centers, angles, quality, pose, exact duplicate
                                 pairs within identities; the faces are scattered to their two
                                 nearest cells' duplicate-search groups, and by sha1
    driver     every identity's name, sorted: its code (codes/)
    centers    (one task)  the index of every identity's dominant center, built from the partitions'
                           centers (fp16 beyond a few thousand identities; and then a scan of every
                           center, compressed, for faces matching no identity); the impostor angles
    lookalikes (per partition)  each identity's nearest other centers, and the merge candidates
    driver     globals: thresholds, merges (no process but a task holds every center)
    duplicates (per search group)  near-duplicate and identical-bytes edges
    driver     duplicate clusters (connected components over the edges' faces only): copies (identical
               bytes, or a copy by the perceptual hashes), and near-identical photos (distinct shots whose
               embeddings are above the duplicate cosine)
    decide     (per partition)  nearest other identity, keep/reason/rank, reviews, identity rows;
                                 scores scattered back to their spine chunk
    write      (per chunk)  the chunk's scores in spine order, its curated shards
    driver     scores-<digest>.parquet and identities-<digest>.parquet, streamed

Results equal ``score_table``'s when the run has at most SAMPLE_ROWS scored faces (the sample is
then every face) and one search group (GROUP_ROWS). Beyond: the quality reference of an
uncalibrated model and the run's impostor angles come from a uniform sample of SAMPLE_ROWS faces
(card thresholds and references are unaffected), and a face is searched for duplicates in the
groups of its two nearest cells, with two probes of an IVF in each (a duplicate whose twin is in
neither is missed: 2% of re-saved copies, measured). ``mode="head"`` trains the sub-center head per partition.

Every step writes its files under OUT/_scoring/<digest>/ and a marker last: a run killed anywhere
resumes with the finished chunks, partitions and groups skipped. ``mapper(fn, items)`` runs a
step over its items (in process by default; ``flows.ray_exec.ray_map`` on Ray).

Longer than 400 lines because the steps read best side by side: each is a few dozen lines over
the same work directory, and the driver that runs them is their table of contents.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import re
import shutil
import zlib
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import curation as C
from curate import groups as G
from curate.config import ScoreConfig
from curate.errors import InputError
from curate.files import atomic_write, write_json
from curate.io.shards import ShardStore
from curate.schema import decode_embeddings
from curate.stages import dedup, nearest, score
from curate.stages.phash import band_keys
from curate.stages.select import unidentifiable_below

PART_ROWS = 250_000  # images per partition and per chunk: about 1.5 GB of working memory a task
SAMPLE_ROWS = 200_000  # scored faces in the sample
GROUP_ROWS = 250_000  # faces per duplicate-search group: about 1 GB a task
EXTRA = ["_chunk", "_shard", "_row"]  # where a row came from: spine chunk, shard, position in it
NODE = ["gid", "image_id", "identity", "quality", "angle", "face_size", "bpp", "source"]  # a face in a duplicate cluster


def _crc(values: list) -> np.ndarray:
    return np.array([zlib.crc32(v.encode()) if v is not None else 0 for v in values], np.int64)


def _bucket(keys: pa.ChunkedArray | pa.Array, n: int) -> np.ndarray:
    """(N,) stable bucket in [0, n) of each string (the same in every process), hashing each
    distinct value once."""
    if n == 1 or not len(keys):
        return np.zeros(len(keys), np.int64)
    enc = pc.dictionary_encode(keys).combine_chunks()
    per = _crc(enc.dictionary.to_pylist()) % n
    return np.where(pc.is_valid(enc).to_numpy(zero_copy_only=False), per[pc.fill_null(enc.indices, 0).to_numpy()], 0)


def _scatter(t: pa.Table, key: np.ndarray, path: Callable[[int], str]) -> None:
    """Rows of ``t`` into one file per key (path(key)), each keeping the rows' order; no rows,
    no files."""
    if not len(key):
        return
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    t = t.take(pa.array(order))
    bounds = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        piece = t.slice(a, b - a)
        atomic_write(path(int(key_sorted[a])), lambda tmp, x=piece: pq.write_table(x, tmp))


def _gather(pattern: str) -> pa.Table:
    files = sorted(glob.glob(pattern))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})


class Work:
    """The scoring's working directory, its plan and its step markers."""

    def __init__(self, root: str):
        self.root = root

    def path(self, *parts: str) -> str:
        p = os.path.join(self.root, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    @property
    def plan(self) -> dict:
        with open(os.path.join(self.root, "plan.json")) as f:
            return json.load(f)

    def done(self, step: str, item: int) -> dict | None:
        p = os.path.join(self.root, "done", f"{step}-{item:05d}.json")
        if os.path.exists(p):
            with open(p) as f:
                return json.load(f)
        return None

    def mark(self, step: str, item: int, result: dict) -> dict:
        write_json(self.path("done", f"{step}-{item:05d}.json"), result)
        return result

    def pending(self, step: str, n: int) -> list[int]:
        return [i for i in range(n) if self.done(step, i) is None]

    def results(self, step: str, n: int) -> list[dict]:
        return [self.done(step, i) for i in range(n)]


def step(name: str):
    """A step over items: skipped when its marker exists; the marker (holding its small result)
    is written after all of its files."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(root: str, item: int, **kw) -> dict:
            w = Work(root)
            return w.done(name, item) or w.mark(name, item, fn(w, item, **kw))
        return run
    return wrap


# -- steps run in parallel (module level: Ray pickles them by reference) ---------------------
@step("split")
def split(w: Work, c: int) -> dict:
    plan = w.plan
    files = plan["chunks"][c]
    tables = []
    for shard, f, *_ in files:
        have = set(pq.ParquetFile(f).schema_arrow.names)
        t = pq.read_table(f, columns=[k for k in C.READ if k in have])
        for k, typ in C.LATER.items():  # a run made before the column existed
            if k not in have:
                t = t.append_column(k, pa.nulls(len(t), typ))
        n = len(t)
        tables.append(t.append_column("_chunk", pa.array(np.full(n, c, np.int32)))
                      .append_column("_shard", pa.array(np.full(n, shard, np.int32)))
                      .append_column("_row", pa.array(np.arange(n, dtype=np.int32))))
    t = pa.concat_tables(tables)
    _scatter(t, _bucket(t["identity"], plan["partitions"]), lambda p: w.path("in", f"p={p:05d}", f"c={c:05d}.parquet"))
    faces = _group_faces(t, [e[2] for e in files if len(e) > 2 and e[2] and os.path.exists(e[2])], plan.get("min_face_size", 20.0))
    _scatter(faces, _bucket(faces["identity"], plan["partitions"]), lambda p: w.path("det", f"p={p:05d}", f"c={c:05d}.parquet"))
    cand = t.filter(pa.array(C.candidates(t)))
    rate = plan["sample_rate"]
    if rate < 1:  # uniform and the same on every rerun: by a hash of the image id
        cand = cand.filter(pa.array(_crc(cand["image_id"].to_pylist()) % 1_000_000 < rate * 1_000_000))
    sample = cand.select(["image_id", "identity", "embedding", "feat_norm", "sharpness", "det_score"])
    atomic_write(w.path("sample", f"c={c:05d}.parquet"), lambda tmp: pq.write_table(sample, tmp))
    return {"rows": len(t), "models": sorted(C.model_ids(t))}


def _group_faces(t: pa.Table, det_files: list[str], min_face_size: float) -> pa.Table:
    """The detected faces of ``t``'s photos with several faces (those scoring may re-pick), at
    least ``min_face_size`` px, with their photo's identity."""
    cols = ["image_id", "face_idx", *G.FACE]
    n_faces = pc.fill_null(t["n_faces"], 0) if "n_faces" in t.column_names else pa.array(np.zeros(len(t), np.int16))
    photos = t["image_id"].filter(pc.and_(pc.greater(n_faces, 1), pc.is_in(t["reason"], pa.array(["ok", "multi_face_ambiguous"]))))
    parts = []
    for f in det_files if len(photos) else []:
        have = set(pq.ParquetFile(f).schema_arrow.names)
        d = pq.read_table(f, columns=[k for k in cols if k in have])
        for k in cols:  # a run made before detections had the crop's cues and hash
            if k not in have:
                d = d.append_column(k, pa.nulls(len(d), C.LATER.get(k, pa.float32())))
        d = d.select(cols).filter(pc.and_(pc.is_in(d["image_id"], value_set=photos), pc.greater_equal(d["face_size"], min_face_size)))
        parts.append(d)
    d = pa.concat_tables(parts) if parts else None
    if d is None or not len(d):
        return pa.table({"image_id": pa.array([], pa.string()), "identity": pa.array([], pa.string())})
    return d.append_column("identity", t["identity"].take(pc.index_in(d["image_id"], value_set=t["image_id"])))


@step("identities")
def identities(w: Work, p: int, cfg: ScoreConfig, cal: dict | None, ref: dict, merge_angle: float) -> dict:
    plan = w.plan
    t = _gather(w.path("in", f"p={p:05d}", "*.parquet"))
    if not len(t):
        return {"rows": 0, "signals": None}
    faces = _gather(w.path("det", f"p={p:05d}", "*.parquet"))
    if len(faces):  # group photos: the labelled person's face, by the label's template from its other photos
        mine = t.filter(pc.is_in(t["identity"], value_set=pc.unique(faces["identity"])))
        names, templates = C.identity_templates(mine, cfg, merge_angle)
        # the far angle the scoring will use (its globals come later): the user's, else the card's
        far = cfg.far_angle or (cal or {}).get("thresholds", {}).get("far_angle") or 75.0
        t, picks = G.pick_faces(t, faces, names, templates, cal, far)
        atomic_write(w.path("picks", f"p={p:05d}.parquet"), lambda tmp: pq.write_table(picks, tmp))
        atomic_write(w.path("picked", f"p={p:05d}.parquet"), lambda tmp: pq.write_table(t, tmp))
    part, ids, centers, used, (r, c, s, copy) = C.score_identities(t, cfg, cal, ref, merge_angle)
    part = part.append_column("_gid", pa.array((np.int64(p) << 32) + np.arange(len(t), dtype=np.int64)))
    atomic_write(w.path("a", f"p={p:05d}.parquet"), lambda tmp: pq.write_table(part, tmp))
    atomic_write(w.path("ids", f"p={p:05d}.parquet"), lambda tmp: pq.write_table(ids, tmp))
    np.save(w.path("ids", f"p={p:05d}.npy"), centers.astype(np.float32))
    cand = pa.array(C.candidates(t))
    faces = pa.table({"gid": part["_gid"], "image_id": t["image_id"], "identity": t["identity"], "quality": part["quality"],
                      "angle": part["angle_to_dominant"], "face_size": t["face_size"], "bpp": _bytes_per_pixel(t),
                      "source": t["source"],
                      "embedding": t["embedding"], "image_hash": t["image_hash"],
                      "sha1": t["sha1"]}).filter(cand)
    groups = plan["groups"]
    stored = np.zeros(len(faces), np.int64)
    extra = stored
    if groups > 1 and len(faces):  # the group of the face's nearest cell, and of its second nearest
        cells = np.load(w.path("cells.npz"))
        faiss = __import__("faiss")
        index = faiss.IndexFlatIP(cells["centroids"].shape[1])
        index.add(cells["centroids"])
        _, near = dedup.search(index, decode_embeddings(faces["embedding"]), 2)
        stored, extra = cells["group"][near[:, 0]], cells["group"][near[:, 1]]
    body = faces.drop_columns(["sha1"])
    _scatter(body.append_column("stored", pa.array(np.ones(len(faces), bool))), stored,
             lambda g: w.path("dupin", f"g={g:05d}", f"p={p:05d}-s.parquet"))
    also = extra != stored
    if also.any():
        _scatter(body.filter(pa.array(also)).append_column("stored", pa.array(np.zeros(int(also.sum()), bool))),
                 extra[also], lambda g: w.path("dupin", f"g={g:05d}", f"p={p:05d}-q.parquet"))
    if len(r):  # exact duplicates within each identity (over the candidate rows, as ``faces``): floor, copies
        gid = faces["gid"].to_numpy()
        nodes = np.unique(np.r_[r, c])
        atomic_write(w.path("dupout", f"p={p:05d}-pairs-nodes.parquet"), lambda tmp: pq.write_table(
            faces.take(pa.array(nodes)).select(NODE), tmp))
        atomic_write(w.path("dupout", f"p={p:05d}-pairs-edges.parquet"), lambda tmp: pq.write_table(
            pa.table({"r": gid[r], "c": gid[c], "s": s, "copy": copy}), tmp))
    hashed = faces.filter(pc.is_valid(faces["sha1"])).select([*NODE, "sha1"])
    if "face_idx" in t.column_names and len(hashed):  # one group photo under two labels: two faces, not a copy
        fi = pc.fill_null(t["face_idx"].filter(cand), 0).take(pc.index_in(hashed["gid"], value_set=faces["gid"]))
        hashed = hashed.set_column(len(NODE), "sha1", pc.binary_join_element_wise(hashed["sha1"], pc.cast(fi, pa.string()), ":"))
    if len(hashed):
        _scatter(hashed, _bucket(hashed["sha1"], groups), lambda g: w.path("sha", f"g={g:05d}", f"p={p:05d}.parquet"))
    # copies across identities at any scale: photo hashes within 2 bits share a band of the 64-bit
    # hash, either way round (phash.band_keys). Each face's bands go to their buckets' groups, and
    # its row (phrows) waits for the pairs found there (_hash_copies)
    ph = faces.filter(pc.is_valid(faces["image_hash"]))
    if len(ph):
        atomic_write(w.path("phrows", f"p={p:05d}.parquet"), lambda tmp: pq.write_table(ph.select([*NODE, "embedding", "image_hash"]), tmp))
        keys = band_keys(C.hashes_of(ph)[0])
        each = pa.array(np.repeat(np.arange(len(ph)), keys.shape[1]))
        rows = ph.select(["gid", "identity"]).take(each).append_column("key", pa.array(keys.ravel()))
        rows = rows.append_column("h64", pc.binary_slice(ph["image_hash"], 0, 16).take(each))
        key = keys.ravel()
        _scatter(rows, (key ^ (key >> 17)) % groups, lambda g: w.path("ph", f"g={g:05d}", f"p={p:05d}.parquet"))
    return {"rows": len(t), "signals": used}


def _identity_codes(w: Work, n_parts: int, sample: pa.Table) -> tuple[list, np.ndarray]:
    """(every identity's name, sorted; its scored faces), and the code (position in the names) of
    each partition's identities (codes/p=*.npy) and of the sample's faces (codes/sample.npy)."""
    ids = [pq.read_table(f, columns=["identity", "faces"]) if os.path.exists(f) else None
           for f in (w.path("ids", f"p={p:05d}.parquet") for p in range(n_parts))]
    some = [t for t in ids if t is not None and len(t)]
    every = pa.concat_tables(some) if some else pa.table({"identity": pa.array([], pa.string()), "faces": pa.array([], pa.int64())})
    names, codes = C.identity_codes(every["identity"])
    sizes = np.zeros(len(names), np.int64)
    sizes[codes] = every["faces"].to_numpy()
    at = 0
    for p, t in enumerate(ids):
        k = 0 if t is None else len(t)
        np.save(w.path("codes", f"p={p:05d}.npy"), codes[at : at + k])
        at += k
    np.save(w.path("codes", "sample.npy"), C.codes_in(names, sample["identity"]) if len(sample) else np.zeros(0, np.int64))
    return names, sizes


CENTER_TRAIN = 20  # sampled centers a cell of the center index is trained on


@step("centers")
def center_index(w: Work, _: int) -> dict:
    """The index of every identity's dominant center (nearest.center_index: fp16 beyond a few
    thousand), built from the partitions' centers one at a time, and the run's impostor angles'
    1st percentile (faces of the sample against other identities' centers)."""
    parts = sorted(glob.glob(w.path("ids", "p=*.npy")))
    shapes = [np.load(f, mmap_mode="r").shape for f in parts]  # the headers
    n = sum(s[0] for s in shapes)
    train = np.zeros((0, next((s[1] for s in shapes if s[0]), 1)), np.float32)
    if n > dedup.EXACT_LIMIT:  # the IVF's cells: trained on CENTER_TRAIN centers a cell
        rng = np.random.default_rng(0)
        rate = min(1.0, CENTER_TRAIN * 4 * np.sqrt(n) / n)
        for f, (k, _) in zip(parts, shapes):  # mapped, only the sampled rows read, unmapped after
            if k:
                train = np.concatenate([train, np.load(f, mmap_mode="r")[rng.random(k) < rate]])
    index, scan = nearest.center_index(n=n, train=train), nearest.center_scan(n, train)
    if index is None:
        return {"impostor_p1": None}
    for f, (k, _) in zip(parts, shapes):  # a partition's centers at a time (2 KB a center: 2 GB at 1M)
        if k:
            m = np.load(f)
            for x in filter(None, (index, scan)):
                nearest.add_centers(x, np.load(w.path("codes", os.path.basename(f))), m)
    faiss = __import__("faiss")
    if scan is not None:
        faiss.write_index(scan, w.path("centers-scan.faiss"))
    faiss.write_index(nearest.with_rows(index), w.path("centers.faiss"))
    sample = _gather(w.path("sample", "*.parquet"))
    imp = score.impostor_angles(decode_embeddings(sample["embedding"]) if len(sample) else train[:0],
                                np.load(w.path("codes", "sample.npy")), index)
    return {"impostor_p1": float(np.percentile(imp, 1)) if len(imp) else None}


def _centers(w: Work) -> tuple:
    """(index, scan): the centers' index (nearest.center_index, with_rows) and its scan
    (nearest.center_scan), each None where the centers step wrote none."""
    faiss = __import__("faiss")
    index, scan = (faiss.read_index(f) if os.path.exists(f) else None
                   for f in (w.path("centers.faiss"), w.path("centers-scan.faiss")))
    return nearest.with_rows(index), scan


@step("lookalikes")
def lookalikes(w: Work, p: int, merge_cos: float) -> dict:
    """The look-alikes of the partition's identities (look/p=*.npz), and their pairs at the merge
    cosine or above (the merge candidates)."""
    codes = np.load(w.path("codes", f"p={p:05d}.npy"))
    index, scan = _centers(w) if len(codes) else (None, None)
    ids, sims = nearest.lookalikes(index, codes, np.load(w.path("ids", f"p={p:05d}.npy")) if len(codes) else None,
                                   scan=scan)
    np.savez(w.path("look", f"p={p:05d}.npz"), codes=codes, ids=ids.astype(np.int32))
    hit = (sims >= merge_cos) & (ids >= 0)
    return {"a": np.repeat(codes, hit.sum(1)).tolist(), "b": ids[hit].tolist(), "s": sims[hit].tolist()}


@step("duplicates")
def duplicates(w: Work, g: int, threshold: float) -> dict:
    faces = _gather(w.path("dupin", f"g={g:05d}", "*.parquet"))
    nodes, r, c, s, cp = [], [], [], [], []
    if len(faces):
        stored, extra = faces.filter(faces["stored"]), faces.filter(pc.invert(faces["stored"]))
        qi, si, sim = dedup.knn_edges(decode_embeddings(stored["embedding"]), threshold,
                                      extra=decode_embeddings(extra["embedding"]) if len(extra) else None)
        faces = pa.concat_tables([stored, extra])
        gq, gs = faces["gid"].to_numpy()[qi], stored["gid"].to_numpy()[si]
        keep = gq != gs
        r.append(gq[keep])
        c.append(gs[keep])
        s.append(sim[keep])
        cp.append(dedup.copy_pairs(*C.hashes_of(faces), qi[keep], si[keep]))  # faces: stored rows first
        nodes.append(faces.select(NODE))
    hashed = _gather(w.path("sha", f"g={g:05d}", "*.parquet"))
    if len(hashed):
        a, b, sim = dedup.sha_edges(hashed["sha1"].to_pylist())
        gid = hashed["gid"].to_numpy()
        r.append(gid[a])
        c.append(gid[b])
        s.append(sim)
        cp.append(np.ones(len(a), bool))  # identical bytes: a copy
        nodes.append(hashed.select(NODE))
    ph = _gather(w.path("ph", f"g={g:05d}", "*.parquet"))
    if len(ph):  # rows sharing a band of a photo hash under different identities (within one: identity_pairs saw them)
        who = pc.dictionary_encode(ph["identity"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
        a, b = dedup.bucket_pairs(ph["key"].to_numpy(), who)
        h = np.frombuffer(b"".join(ph["h64"].to_pylist()), np.uint8).reshape(-1, 16) if len(a) else np.zeros((0, 16), np.uint8)
        near = dedup.near_photos(h, a, b)
        gid = ph["gid"].to_numpy()
        pairs = np.unique(np.sort(np.c_[gid[a[near]], gid[b[near]]], 1), axis=0).reshape(-1, 2)  # met in several bands
        atomic_write(w.path("dupout", f"g={g:05d}-hashpairs.parquet"),
                     lambda tmp: pq.write_table(pa.table({"r": pairs[:, 0], "c": pairs[:, 1]}), tmp))
    edges = pa.table({"r": pa.array(np.concatenate(r) if r else np.zeros(0, np.int64)),
                      "c": pa.array(np.concatenate(c) if c else np.zeros(0, np.int64)),
                      "s": pa.array(np.concatenate(s) if s else np.zeros(0, np.float32)),
                      "copy": pa.array(np.concatenate(cp) if cp else np.zeros(0, bool))})
    if len(edges):
        used = pa.concat_tables(nodes)
        used = used.filter(pc.is_in(used["gid"], pa.concat_arrays([edges["r"].combine_chunks(), edges["c"].combine_chunks()])))
        atomic_write(w.path("dupout", f"g={g:05d}-nodes.parquet"), lambda tmp: pq.write_table(used, tmp))
        atomic_write(w.path("dupout", f"g={g:05d}-edges.parquet"), lambda tmp: pq.write_table(edges, tmp))
    return {"edges": len(edges)}


def _hash_copies(w: Work, pairs: pa.Table) -> tuple[pa.Table, pa.Table] | None:
    """(nodes, edges) of the face pairs under different identities whose photo hashes met in a band
    (``pairs``: r, c gids) and that are copies: by the whole hashes (dedup.copy_pairs) and the same
    face (cosine >= COPY_COS). Read from the rows of just those faces (phrows)."""
    if not len(pairs):
        return None
    r, c = pairs["r"].to_numpy(), pairs["c"].to_numpy()
    want = pa.array(np.unique(np.r_[r, c]))
    rows = pa.concat_tables([pq.read_table(w.path("phrows", f"p={p:05d}.parquet"), filters=pc.is_in(pc.field("gid"), want))
                             for p in np.unique(want.to_numpy() >> 32).tolist()]).sort_by("gid")  # a row group at a time
    gid = rows["gid"].to_numpy()
    a, b = np.searchsorted(gid, r), np.searchsorted(gid, c)
    emb = C.unit_embeddings(rows)
    sim = np.einsum("nd,nd->n", emb[a], emb[b]).astype(np.float32)
    hit = dedup.copy_pairs(*C.hashes_of(rows), a, b) & (sim >= C.COPY_COS)
    edges = pa.table({"r": gid[a[hit]], "c": gid[b[hit]], "s": sim[hit], "copy": np.ones(int(hit.sum()), bool)})
    return rows.select(NODE), edges


@step("decide")
def decide(w: Work, p: int, cfg: ScoreConfig, unidentifiable: tuple[float, float] | None, reviews: pa.Table, candidate_cos: float) -> dict:
    from curate import reviews as R

    picked = w.path("picked", f"p={p:05d}.parquet")
    t = pq.read_table(picked) if os.path.exists(picked) else _gather(w.path("in", f"p={p:05d}", "*.parquet"))
    if not len(t):
        return {"reasons": {}, "scored": 0, "overrides": 0}
    part = pq.read_table(w.path("a", f"p={p:05d}.parquet")).drop_columns(["_gid"])
    picks_file = w.path("picks", f"p={p:05d}.parquet")
    picks = pq.read_table(picks_file) if os.path.exists(picks_file) else G.NO_PICKS
    part = part.append_column("group_pick", picks["detail"].take(pc.index_in(t["image_id"], value_set=picks["image_id"])))
    g = _read_globals(w)
    g.index, g.scan = _centers(w)
    if g.index is not None:
        g.neighbours = np.load(w.path("neighbours.npy"), mmap_mode="r")
    dups, near = (pq.read_table(f) if os.path.exists(f) else C.EMPTY_DUPS
                  for f in (w.path("dups", f"p={p:05d}.parquet"), w.path("near", f"p={p:05d}.parquet")))
    scores = C.decide(t, part, g, dups, cfg, unidentifiable, near)
    faces = _gather(w.path("det", f"p={p:05d}", "*.parquet"))
    if len(faces):  # every face of the partition's group photos, the picked one and the others
        gf = G.group_faces(faces, picks, g.index, g.names, g.groups(), candidate_cos)
        atomic_write(w.path("group_faces", f"p={p:05d}.parquet"), lambda tmp: pq.write_table(gf, tmp))
    ids = pq.read_table(w.path("ids", f"p={p:05d}.parquet"))
    ids = C.finish_identities(ids, g, scores, cfg) if len(ids) else None
    auto = C.reason_counts(scores)
    scores = R.apply(scores, reviews)  # a reviewer's decisions win; the automatic ones stay beside them
    if ids is not None:
        if len(reviews):  # the reviewers' keep/reject changes the counts
            ids = ids.set_column(ids.schema.get_field_index("kept"), "kept", C.kept_per_identity(ids, scores))
        atomic_write(w.path("ids_final", f"p={p:05d}.parquet"), lambda tmp: pq.write_table(ids, tmp))
    for k in EXTRA:
        scores = scores.append_column(k, t[k])
    _scatter(scores, t["_chunk"].to_numpy(), lambda c: w.path("out", f"c={c:05d}", f"p={p:05d}.parquet"))
    return {"reasons": auto, "scored": int(C.candidates(t).sum()), "overrides": R.overrides(scores)}


@step("write")
def write(w: Work, c: int, out: str, digest: str) -> dict:
    """The chunk's scores in spine order, and each of its shards' rows joined with their scores,
    sorted by identity then quality (crawls laid out by identity come out sorted across shards)."""
    scores = _gather(w.path("out", f"c={c:05d}", "*.parquet"))
    if not len(scores):  # shards with no rows
        return {"rows": 0}
    scores = scores.sort_by([("_shard", "ascending"), ("_row", "ascending")])
    shard_of = scores["_shard"].to_numpy()
    extra = [k for k in scores.column_names if k not in ("image_id", "identity", "sharpness", "det_score", "face_size",
                                                         "face_idx", *EXTRA)]
    start, store = 0, ShardStore(out)
    for shard, f, *det in w.plan["chunks"][c]:
        n = int(np.searchsorted(shard_of, shard, side="right")) - start
        rows = scores.slice(start, n)
        start += n
        spine = pq.read_table(f).drop_columns(["keep", "reason"])
        if len(spine) != n or rows["image_id"] != spine["image_id"]:
            raise RuntimeError(f"{f}: scores do not line up with the shard ({n} vs {len(spine)} rows)")
        spine = _with_picked_faces(spine, rows, det[0] if det else None)
        for k in extra:
            spine = spine.append_column(k, rows[k])
        joined = spine.sort_by([("identity", "ascending"), ("quality_rank", "ascending")])
        atomic_write(store.curated_file(shard, digest), lambda tmp, j=joined: pq.write_table(j, tmp))
    body = scores.drop_columns(EXTRA)
    atomic_write(w.path("scores", f"c={c:05d}.parquet"), lambda tmp: pq.write_table(body, tmp))
    return {"rows": len(body)}


PICKED = ["face_idx", "det_score", "bbox", "landmarks", "face_size", "crop", "sharpness", "brightness", "contrast", "detail",
          "embedding", "feat_norm"]


def _with_picked_faces(spine: pa.Table, scores: pa.Table, det_file: str | None) -> pa.Table:
    """The spine's rows with, where scoring picked another face of a group photo (scores.face_idx),
    that face's box, crop, cues and embedding from the detections shard."""
    if "face_idx" not in scores.column_names or det_file is None:
        return spine
    moved = pc.fill_null(pc.not_equal(scores["face_idx"], spine["face_idx"]), False)
    if not pc.any(moved).as_py():
        return spine
    det = pq.read_table(det_file)
    key = pc.binary_join_element_wise(det["image_id"], pc.cast(det["face_idx"], pa.string()), "#")
    want = pc.binary_join_element_wise(spine["image_id"], pc.cast(scores["face_idx"], pa.string()), "#")
    at = pc.index_in(want, value_set=key)
    moved = pc.and_(moved, pc.is_valid(at))
    for col in PICKED:
        if col in det.column_names and col in spine.column_names:
            i = spine.schema.get_field_index(col)
            spine = spine.set_column(i, col, pc.if_else(moved, det[col].take(at).cast(spine.schema.field(col).type), spine[col]))
    return spine


COPY_NAME = re.compile(r"(?i)(copy|kopie|\(\d+\)|[ _-]\d{1,2})(\.\w+)?$|^copy of ")  # a file saved again


def _bytes_per_pixel(t: pa.Table) -> pa.Array:
    """Bytes of the file per decoded pixel: how little it was compressed (null where unknown)."""
    px = pc.multiply(pc.cast(t["width"], pa.float64()), pc.cast(t["height"], pa.float64()))
    return pc.divide(pc.cast(t["n_bytes"], pa.float64()), pc.if_else(pc.greater(px, 0), px, None))


def _cluster_table(nodes: pa.Table, edges: pa.Table, far_angle: float, by_size: bool) -> tuple[pa.Table, np.ndarray]:
    """dedup.dup_table over the edges (gids of ``nodes``, sorted by gid) -> (the table, the
    partition of each of its rows). The face that stays is, among those within ``far_angle`` of
    their own identity (a copy filed under the wrong label never displaces the photo under the
    right one), the best-quality one; of copies of one photo (``by_size``), the one whose face is
    largest (in 5% steps: a downscaled copy never displaces its original), then the least
    compressed (bytes per pixel, in 10% steps: a re-encoded copy never displaces its original), then
    the best quality; between equals (the same bytes twice), the original name (no ``_copy``,
    ``copy of``, ``(1)`` or ``-2`` mark), then the shortest path."""
    gid = nodes["gid"].to_numpy()
    r, c = np.searchsorted(gid, edges["r"].to_numpy()), np.searchsorted(gid, edges["c"].to_numpy())
    far = np.nan_to_num(nodes["angle"].to_numpy(zero_copy_only=False).astype(np.float64), nan=0.0) > far_angle
    rank = np.clip(np.nan_to_num(nodes["quality"].to_numpy(zero_copy_only=False).astype(np.float64), nan=-1.0), -1, 100)
    if by_size:
        size = np.nan_to_num(nodes["face_size"].to_numpy(zero_copy_only=False).astype(np.float64), nan=1.0)
        bpp = np.nan_to_num(nodes["bpp"].to_numpy(zero_copy_only=False).astype(np.float64), nan=1e-3)
        rank = (rank + 1e3 * (500 + np.round(np.log(np.maximum(bpp, 1e-6)) / np.log(1.1)))
                + 1e6 * np.round(np.log(np.maximum(size, 1.0)) / np.log(1.05)))
    src = nodes["source"].to_pylist()
    rank = rank - 1e-3 * np.array([bool(COPY_NAME.search(os.path.basename(s or ""))) for s in src]) - 1e-6 * np.array(
        [min(len(s or ""), 999) for s in src])
    rank = rank - 1e9 * far
    t = dedup.dup_table(np.array(nodes["image_id"].to_pylist(), object), np.array(nodes["identity"].to_pylist(), object),
                        rank, r, c, edges["s"].to_numpy())
    at = pc.index_in(t["image_id"], value_set=nodes["image_id"])
    return t, nodes["gid"].take(at).to_numpy() >> 32


def _write_globals(w: Work, g: C.Globals) -> None:
    """The globals every ``decide`` task reads, as JSON (never a pickle: a run directory is data
    that others open); the centers' index and scan are their own files (centers.faiss, centers-scan.faiss)."""
    write_json(w.path("globals.json"), {"names": list(g.names), "thresholds": dataclasses.asdict(g.thresholds),
                                        "into": g.into, "merge_sim": g.merge_sim})


def _read_globals(w: Work) -> C.Globals:
    with open(w.path("globals.json")) as f:
        d = json.load(f)
    return C.Globals(d["names"], score.Thresholds(**d["thresholds"]), d["into"], d["merge_sim"])


# -- the driver ---------------------------------------------------------------------------------
def local_map(fn, items: list) -> list:
    return [fn(i) for i in items]


def plan_work(w: Work, files: list[tuple], part_rows: int, min_face_size: float = 20.0) -> dict:
    """Chunks of spine shards of about ``part_rows`` images, partitions, search groups. Kept on
    disk: a resumed scoring uses the plan it started with."""
    p = w.path("plan.json")
    if os.path.exists(p):
        return w.plan
    counts = [pq.ParquetFile(e[1]).metadata.num_rows for e in files]
    rows = sum(counts)
    chunks, cur, size = [], [], 0
    for e, k in zip(files, counts):
        if cur and size + k > part_rows:
            chunks.append(cur)
            cur, size = [], 0
        cur.append(tuple(e))
        size += k
    chunks.append(cur)
    plan = {"rows": rows, "chunks": chunks, "partitions": max(1, -(-rows // part_rows)),
            "groups": max(1, -(-rows // GROUP_ROWS)), "sample_rate": min(1.0, SAMPLE_ROWS / max(rows, 1)),
            "min_face_size": min_face_size}
    write_json(p, plan)
    return plan


def search_cells(sample_emb: np.ndarray, groups: int) -> dict:
    """Cells (k-means on the sample, 16 a group) packed into ``groups`` duplicate-search groups of
    about equal size (largest cell first, into the lightest group)."""
    faiss = __import__("faiss")
    n_cells = int(min(16 * groups, max(groups, len(sample_emb) // 40)))
    km = faiss.Kmeans(sample_emb.shape[1], n_cells, niter=10, seed=1, spherical=True, min_points_per_centroid=1)
    km.train(sample_emb)
    _, cell = km.index.search(sample_emb, 1)
    load = np.bincount(cell[:, 0], minlength=n_cells)
    group, filled = np.zeros(n_cells, np.int64), np.zeros(groups, np.int64)
    for k in np.argsort(-load, kind="stable"):
        group[k] = int(filled.argmin())
        filled[group[k]] += load[k] + 1
    return {"centroids": km.centroids.astype(np.float32), "group": group}


def score_partitioned(work_dir: str, out: str, files: list[tuple], cfg: ScoreConfig, cal: dict | None,
                      reviews: pa.Table, digest: str, part_rows: int = PART_ROWS, mapper=local_map,
                      min_face_size: float = 20.0):
    """-> (the work directory, the calibration record, review overrides). ``files``: (shard, its
    images file[, its detections file]). Writes the curated shards and, per chunk, the scores and
    identities that ``stream_outputs`` joins; the caller removes the work directory (``remove``)
    once they are written. ``min_face_size``: the run's, for the faces of group photos."""
    w = Work(work_dir)
    plan = plan_work(w, files, part_rows, min_face_size)
    n_chunks, n_parts, n_groups = len(plan["chunks"]), plan["partitions"], plan["groups"]
    mapper(functools.partial(split, work_dir), w.pending("split", n_chunks))
    models = set().union(*(r["models"] for r in w.results("split", n_chunks)))
    if len(models) > 1:
        raise InputError(f"one recognizer per scoring run, found {sorted(models)}")
    sample = _gather(w.path("sample", "*.parquet"))
    ref = cal or C.run_reference(C.signals_of(sample))  # an uncalibrated model: percentiles of this run
    if n_groups > 1 and not os.path.exists(w.path("cells.npz")):
        cells = search_cells(C.unit_embeddings(sample), n_groups)
        with open(w.path("cells.npz"), "wb") as f:
            np.savez(f, **cells)
    merge_angle = C.merge_angle_of(cfg, cal)
    mapper(functools.partial(identities, work_dir, cfg=cfg, cal=cal, ref=ref, merge_angle=merge_angle),
           w.pending("identities", n_parts))
    signals = next((r["signals"] for r in w.results("identities", n_parts) if r["signals"]), None)

    # globals: every identity's dominant center, in an index built and searched in tasks
    names, sizes = _identity_codes(w, n_parts, sample)
    mapper(functools.partial(center_index, work_dir), w.pending("centers", 1))
    th = score.thresholds(w.done("centers", 0)["impostor_p1"], cfg, cal)
    looks = mapper(functools.partial(lookalikes, work_dir, merge_cos=th.merge_cos), list(range(n_parts)))
    a, b, s = (np.concatenate([np.zeros(0)] + [np.asarray(r[k]) for r in looks]) for k in "abs")
    neighbours = np.full((len(names), nearest.NEIGHBOURS), -1, np.int32)  # every identity's, for every decide task
    for p in range(n_parts):
        look = np.load(w.path("look", f"p={p:05d}.npz"))
        neighbours[look["codes"]] = look["ids"]
    np.save(w.path("neighbours.npy"), neighbours)
    del neighbours
    g = C.Globals(names, th, *C.merges_of(names, sizes, nearest.merge_candidates(a, b, s)))
    _write_globals(w, g)

    # duplicates: edges per search group, clusters over the edges' faces
    mapper(functools.partial(duplicates, work_dir, threshold=g.thresholds.dup_cos), w.pending("duplicates", n_groups))
    if not w.done("clusters", 0):
        nodes = _gather(w.path("dupout", "*-nodes.parquet"))
        edges = _gather(w.path("dupout", "*-edges.parquet"))
        hashed = _hash_copies(w, _gather(w.path("dupout", "*-hashpairs.parquet")))
        if hashed is not None:
            nodes, edges = (pa.concat_tables([x, y]) if len(x) else y for x, y in ((nodes, hashed[0]), (edges, hashed[1])))
        if len(edges):  # copies (by bytes or hashes), and the near-identical rest (within identities: from the floor)
            copies = edges.filter(edges["copy"])
            near = edges.filter(pc.and_(pc.invert(edges["copy"]), pc.greater_equal(edges["s"], g.thresholds.dup_cos)))
            nodes = nodes.take(pa.array(np.unique(nodes["gid"].to_numpy(), return_index=True)[1]))
            for kind, e in (("dups", copies), ("near", near)):
                if len(e):
                    t, part_of = _cluster_table(nodes, e, g.thresholds.far_angle, by_size=kind == "dups")
                    _scatter(t, part_of, lambda p, k=kind: w.path(k, f"p={p:05d}.parquet"))
        w.mark("clusters", 0, {"edges": len(edges)})
    for d in ("dupin", "sha", "ph", "phrows"):  # the search groups' copies of the faces are not needed again
        shutil.rmtree(os.path.join(w.root, d), ignore_errors=True)

    results = mapper(functools.partial(decide, work_dir, cfg=cfg, unidentifiable=unidentifiable_below(cfg, cal), reviews=reviews,
                                       candidate_cos=G.candidate_cos(cal, g.thresholds.far_angle)),
                     list(range(n_parts)))
    mapper(functools.partial(write, work_dir, out=out, digest=digest), w.pending("write", n_chunks))

    reasons: dict[str, int] = {}
    for r in results:
        for k, v in r["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    n_scored = sum(r["scored"] for r in results)
    calib = C.calibration_record(g if len(names) else None, cal, merge_angle,
                                 next(iter(models), None), signals or list(ref.get("quality", {}).get("signals", ["norm"])))
    calib["warnings"] += C.flag_warnings(reasons, n_scored)
    return w, calib, sum(r["overrides"] for r in results)


def stream_outputs(w: Work, scores_path: str, identities_path: str, group_faces_path: str | None = None) -> None:
    """The chunks' scores into one file (row group by row group), the identities sorted by name,
    the faces of the group photos."""
    def scores(tmp):
        writer = None
        for c in range(len(w.plan["chunks"])):
            if not os.path.exists(w.path("scores", f"c={c:05d}.parquet")):
                continue
            t = pq.read_table(w.path("scores", f"c={c:05d}.parquet"))
            writer = writer or pq.ParquetWriter(tmp, t.schema)
            writer.write_table(t)
        if writer is None:
            raise InputError("no scored rows to write")
        writer.close()

    atomic_write(scores_path, scores)
    ids = _gather(w.path("ids_final", "*.parquet"))
    ids = ids.sort_by("identity") if len(ids) else C.no_identities()
    atomic_write(identities_path, lambda tmp: pq.write_table(ids, tmp))
    if group_faces_path:
        gf = _gather(w.path("group_faces", "*.parquet"))
        atomic_write(group_faces_path, lambda tmp: pq.write_table(gf if len(gf) else G.NO_GROUP_FACES, tmp))


def remove(w: Work) -> None:
    shutil.rmtree(w.root, ignore_errors=True)
