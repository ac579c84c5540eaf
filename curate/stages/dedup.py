"""dedup: near-duplicate images and copies (faiss); the identities' centers are curate.stages.centers.

CPU faiss by default; with faiss-gpu installed, indexes move to the GPU. Exact search up to
``EXACT_LIMIT`` vectors, IVF beyond (nlist ~ 4 sqrt(N), 20 training points a list, nprobe 4-16):
an all-pairs pass over 100K faces already costs 5e12 FLOPs, minutes on 2 cores, while what we look
for (the same photo, the nearest identity center) is close enough for IVF to find it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from curate.errors import require_module
from curate.stats import unit

EXACT_LIMIT = 10_000


CHUNK = 1 << 16


def unit_rows(x: np.ndarray, a: int = 0, b: int | None = None) -> np.ndarray:
    """Rows a:b of ``x`` (any float dtype: a float16 view of the shards is fine) as float32 unit
    vectors: one chunk at a time, never a float32 copy of the whole."""
    r = np.array(x[a:b], np.float32)  # a copy: normalised in place
    return unit(r, out=r)


def _on_gpu(faiss) -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def ivf_index(x: np.ndarray, nprobe: int = 16, fp16: bool = False, nlist: int | None = None, add: bool = True,
           gpu: bool = True, exact: bool | None = None):
    """Inner-product index over the rows of x, normalised (added CHUNK rows at a time): exact up
    to EXACT_LIMIT rows (or as ``exact`` says: x may be only the training sample of an index
    filled later), IVF beyond with ``nlist`` cells (default 4 sqrt(N)), stored as fp16 when asked
    (half the memory of a float32 copy, and exact enough for cosine thresholds)."""
    faiss = require_module("faiss", "default")
    n, d = x.shape
    if n <= EXACT_LIMIT if exact is None else exact:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = nlist or int(4 * np.sqrt(n))
        quantizer = faiss.IndexFlatIP(d)
        if fp16:
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16,
                                                  faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 5
        index.cp.min_points_per_centroid = 10
        rng = np.random.default_rng(0)
        index.train(unit_rows(x[rng.choice(n, min(n, 20 * nlist), replace=False)]))
        index.nprobe = nprobe
    if gpu and _on_gpu(faiss):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    if add:
        for a in range(0, n, CHUNK):
            index.add(unit_rows(x, a, a + CHUNK))
    return index


def search(index, q: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """index.search over the normalised rows of q, CHUNK rows at a time; with ``probes``, an IVF
    probes that many cells for this search only."""
    if probes is not None and hasattr(index, "nprobe"):
        index.nprobe, before = probes, index.nprobe
        try:
            return search(index, q, k)
        finally:
            index.nprobe = before
    out = [index.search(unit_rows(q, a, a + CHUNK), k) for a in range(0, len(q), CHUNK)]
    if not out:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate([s for s, _ in out]), np.concatenate([i for _, i in out])


DUP_PROBES = 2


def _self_search(x: np.ndarray, k: int) -> tuple[object, np.ndarray, np.ndarray]:
    """(index, sims, nbrs): the k nearest rows of x to each row of x. Beyond EXACT_LIMIT an IVF of
    sqrt(N) cells, two probed: a re-saved copy (cosine ~0.98) is in one of its twin's two nearest
    cells for 98% of pairs (one probe: 92%; four probes of 4 sqrt(N) cells: 99.2% in 2x the time,
    measured on 250K synthetic faces). Each row's cells are computed once, when it is added, and
    reused for its own search."""
    faiss = require_module("faiss", "default")
    n = len(x)
    if n <= EXACT_LIMIT or _on_gpu(faiss):
        index = ivf_index(x, nprobe=DUP_PROBES, fp16=True, nlist=int(np.sqrt(n)))
        return (index, *search(index, x, k))
    index = ivf_index(x, nprobe=DUP_PROBES, fp16=True, nlist=int(np.sqrt(n)), add=False)
    cell = np.empty((n, DUP_PROBES), np.int64)
    cdis = np.empty((n, DUP_PROBES), np.float32)
    for a in range(0, n, CHUNK):
        u = unit_rows(x, a, a + CHUNK)
        dis, c = index.quantizer.search(u, DUP_PROBES)
        cell[a : a + len(u)], cdis[a : a + len(u)] = c, dis
        first = np.ascontiguousarray(c[:, 0])  # held: swig_ptr does not keep its array alive
        index.add_core(len(u), faiss.swig_ptr(u), None, faiss.swig_ptr(first))
    out = [index.search_preassigned(unit_rows(x, a, a + CHUNK), k, cell[a : a + CHUNK], cdis[a : a + CHUNK])
           for a in range(0, n, CHUNK)]
    return index, np.concatenate([s for s, _ in out]), np.concatenate([i for _, i in out])


def knn_edges(x: np.ndarray, threshold: float, extra: np.ndarray | None = None,
              k: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Near-duplicate edges: (query row, row of ``x``, cosine) for each of a query's k nearest rows
    of ``x`` at or above ``threshold``, itself excluded. The queries are the rows of ``x``, then
    those of ``extra`` (numbered from len(x) on: faces stored elsewhere, searched here too). Rows
    are normalised chunk by chunk: float16 views of the shards go in as they are."""
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    k = min(k, n)
    index, sims, nbrs = _self_search(x, k)
    if extra is not None and len(extra):
        s2, n2 = search(index, extra, k)
        sims, nbrs = np.concatenate([sims, s2]), np.concatenate([nbrs, n2])
    rows = np.repeat(np.arange(len(nbrs)), nbrs.shape[1])
    cols, s = nbrs.ravel(), sims.ravel()
    edge = (cols >= 0) & (s >= threshold) & (cols != rows)
    return rows[edge], cols[edge].astype(np.int64), s[edge].astype(np.float32)


# A copy of the whole photo (re-encoded, resized, mirrored): its 64-bit hash within COPY_BITS[0]
# and its 256-bit hash within COPY_BITS[1] of the other's, both in the same orientation. Chosen on
# the benchmark's real faces (seed 0's crawl): re-encoded copies 93% (JPEG q30-90), resized
# 0.3-0.9 and mirrored 100%; of 6,530 pairs of distinct lab-sitting photos and 1,486 of web photos
# of one person, only byte-identical files (5, Yale's) and two web files that are the same picture
# at another size were within. Crops and captions change the whole photo's hash (0 of 14 within):
# they are left to the embedding, as near-identical.
COPY_BITS = (2, 8)


def copy_pairs(image_hash: np.ndarray, valid: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(M,) bool: is the pair (r, c) of rows a copy of one photo by their hashes (COPY_BITS);
    ``image_hash`` (N, WIDTH) uint8 (curate.stages.phash), ``valid`` (N,) present."""
    from curate.stages.phash import distances

    if not len(r):
        return np.zeros(0, bool)
    same, flip = distances(image_hash[r], image_hash[c])
    same_ok = (same[0] <= COPY_BITS[0]) & (same[1] <= COPY_BITS[1])
    flip_ok = (flip[0] <= COPY_BITS[0]) & (flip[1] <= COPY_BITS[1])
    return valid[r] & valid[c] & (same_ok | flip_ok)


def near_photos(image_hash: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(M,) bool: are the 64-bit photo hashes of rows r and c within COPY_BITS[0], either way round
    (``image_hash``: (N, 16 or more) uint8): copy_pairs' cheap first test, for many pairs."""
    from curate.stages.phash import bits

    h, m = image_hash[:, :8], image_hash[:, 8:16]  # the 64-bit hash and its mirror image's (curate.stages.phash)
    return np.minimum(bits(h[r], h[c]), bits(h[r], m[c])) <= COPY_BITS[0]


def identity_rows(codes: np.ndarray):
    """Each identity's rows (ascending), for the identities of two faces or more."""
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    bounds = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a >= 2:
            yield order[a:b]


def unmatched_copies(emb: np.ndarray, codes: np.ndarray, hashes: tuple, quality: np.ndarray, copy_cos: float = 0.7,
                     block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Copies of one photo under one identity (``copy_pairs``) in which the recognizer does not see
    the same face: cosine below ``copy_cos``. The photo is the same, so one of the two faces is too
    degraded for the recognizer to match even to itself. -> (worse, better) rows: of each such pair,
    the face of lower ``quality`` (N,) and the other (a face in several such pairs: its best twin).
    ``emb``: unit rows; ``hashes``: (image_hash, valid) as copy_pairs takes them. Only the 64-bit
    hashes are compared for every pair of an identity's faces; the rest, for the few within."""
    image_hash, valid = hashes
    r, c = [], []
    for rows in identity_rows(codes):
        for i in range(0, len(rows), block):
            qi, qj = np.nonzero(np.triu(np.ones((min(block, len(rows) - i), len(rows)), bool), i + 1))
            gr, gc = rows[qi + i], rows[qj]
            near = near_photos(image_hash, gr, gc) & valid[gr] & valid[gc]
            gr, gc = gr[near], gc[near]
            hit = copy_pairs(image_hash, valid, gr, gc) & (np.einsum("nd,nd->n", emb[gr], emb[gc]) < copy_cos)
            r.append(gr[hit])
            c.append(gc[hit])
    if not r or not sum(map(len, r)):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    r, c = np.concatenate(r), np.concatenate(c)
    worse = np.where(quality[r] <= quality[c], r, c)
    better = np.where(quality[r] <= quality[c], c, r)
    first = np.lexsort((-quality[better], worse))  # per worse face, its best twin first
    keep = np.r_[True, worse[first][1:] != worse[first][:-1]]
    return worse[first][keep].astype(np.int64), better[first][keep].astype(np.int64)


def identity_pairs(emb: np.ndarray, codes: np.ndarray, threshold: float, hashes: tuple | None = None,
                   copy_cos: float = 0.7, block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact duplicate edges within each identity (both ways): every pair of an identity's faces
    with cosine >= threshold, or at or above ``copy_cos`` (the same face) whose hashes say one is a
    copy of the other (``hashes``: (image_hash, valid) as copy_pairs takes them) ->
    (r, c, cosine, copy). A crawl
    re-saves a photo under its own label far more often than under another, and these pairs cost
    only the identities' own sizes squared, so they are never left to an approximate search.
    ``emb``: unit rows."""
    r, c, s, cp = [], [], [], []
    for rows in identity_rows(codes):
        x = emb[rows]
        for i in range(0, len(rows), block):  # an identity of 10K faces: blocks of rows, not 10K x 10K at once
            sims = x[i : i + block] @ x.T
            qi, qj = np.nonzero(sims >= (min(threshold, copy_cos) if hashes is not None else threshold))
            keep = qi + i != qj
            qi, qj = qi[keep], qj[keep]
            gr, gc, sim = rows[qi + i], rows[qj], sims[qi, qj].astype(np.float32)
            copy = copy_pairs(*hashes, gr, gc) if hashes is not None else np.zeros(len(gr), bool)
            hit = copy | (sim >= threshold)
            r.append(gr[hit])
            c.append(gc[hit])
            s.append(sim[hit])
            cp.append(copy[hit])
    if not r:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, bool)
    return (np.concatenate(r).astype(np.int64), np.concatenate(c).astype(np.int64), np.concatenate(s),
            np.concatenate(cp))


def bucket_pairs(keys: np.ndarray, identity: np.ndarray, limit: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of rows (r < c) with the same key (int64) under different identities (codes).
    A bucket of one photo's copies is small; a key shared by more than ``limit`` rows (a blank or
    flat photo) is skipped."""
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1], True])
    start, size = bounds[:-1], np.diff(bounds)
    r, c = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for s in np.unique(size[(size > 1) & (size <= limit)]).tolist():  # the buckets of s rows at once
        i, j = np.triu_indices(s, 1)
        at = start[size == s][:, None]
        r.append(order[at + i].ravel())
        c.append(order[at + j].ravel())
    r, c = np.concatenate(r), np.concatenate(c)
    other = identity[r] != identity[c]
    return r[other], c[other]


def sha_edges(sha1: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identical bytes are duplicates whatever the model says: both ways, cosine 1, between each
    row and the first row with its sha1."""
    first: dict = {}
    r, c = [], []
    for i, h in enumerate(sha1):
        if h is not None:
            j = first.setdefault(h, i)
            if j != i:
                r += [i, j]
                c += [j, i]
    return np.array(r, np.int64), np.array(c, np.int64), np.ones(len(r), np.float32)


def dup_table(image_id: np.ndarray, identity: np.ndarray, quality: np.ndarray, r: np.ndarray, c: np.ndarray,
              s: np.ndarray) -> pa.Table:
    """Duplicate clusters (connected components of the edges r -> c over rows of the node arrays),
    one row per face in one: its image_id, dup_of (the image_id of the cluster's best-quality face,
    ties to the smaller image_id; null for that face itself), dup_sim (the highest cosine of its own
    edges; 0 if it has none) and dup_identity (the identity dup_of is filed under)."""
    nodes, inv = np.unique(np.concatenate([r, c]), return_inverse=True)
    m = len(nodes)
    if m == 0:
        return pa.table({"image_id": pa.array([], pa.string()), "dup_of": pa.array([], pa.string()),
                         "dup_sim": pa.array([], pa.float32()), "dup_identity": pa.array([], pa.string())})
    rr, cc = inv[: len(r)], inv[len(r):]
    _, comp = connected_components(sp.coo_matrix((np.ones(len(rr)), (rr, cc)), shape=(m, m)), directed=False)
    ids = np.asarray(image_id, dtype=object)[nodes]
    q = np.nan_to_num(np.asarray(quality, np.float64)[nodes], nan=-np.inf)
    order = np.lexsort((np.argsort(np.argsort(ids.astype(str), kind="stable")), -q, comp))
    first = np.ones(m, bool)
    first[1:] = comp[order][1:] != comp[order][:-1]
    rep = np.empty(comp.max() + 1, np.int64)
    rep[comp[order][first]] = order[first]
    rep_of = rep[comp]
    sim = np.zeros(m, np.float32)
    np.maximum.at(sim, rr, s)
    ident = np.asarray(identity, dtype=object)[nodes]
    is_rep = rep_of == np.arange(m)
    return pa.table({"image_id": pa.array(ids.tolist(), pa.string()),
                     "dup_of": pa.array(np.where(is_rep, None, ids[rep_of]).tolist(), pa.string()),
                     "dup_sim": pa.array(sim, pa.float32()),
                     "dup_identity": pa.array(np.where(is_rep, None, ident[rep_of]).tolist(), pa.string())})
