"""nearest: the identities' dominant centers, one index over all of them (and, beyond a few
thousand, a compressed scan of them all), each identity's look-alikes, every face's nearest other
identity, and the merge candidates (faiss). The index and the scan are built once per scoring by
one task and read from files by the others (curate.partitioned): no process but those holds
every center.
"""

from __future__ import annotations

import numpy as np

from curate.errors import require_module
from curate.stages.dedup import CHUNK, EXACT_LIMIT, ivf_index, search, unit_rows


def center_index(centers: np.ndarray | None = None, n: int | None = None, train: np.ndarray | None = None):
    """The index of the identities' dominant centers, searched for every face's nearest other
    identity, ids their codes. On the CPU (a file every partition reads), its rows readable
    (with_rows). ``centers``: all of them (code = row), or, for a crawl too big for that, ``n``
    centers added later (add_centers) after training on ``train``, a sample of them. Exact up to
    EXACT_LIMIT; beyond, an IVF storing fp16 (1 KB a 512-d center: 1M identities in 1 GB)."""
    if centers is not None:
        n, train = len(centers), centers
    if n < 2:
        return None
    faiss = require_module("faiss", "default")
    if n <= EXACT_LIMIT:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(train.shape[1]))
    else:
        index = ivf_index(train, nprobe=8, fp16=True, nlist=int(4 * np.sqrt(n)), add=False, gpu=False, exact=False)
    if centers is not None:
        add_centers(index, np.arange(n), centers)
        with_rows(index)
    return index


def add_centers(index, codes: np.ndarray, centers: np.ndarray) -> None:
    """Centers (normalised here) into center_index's or center_scan's ``index`` under their codes."""
    for a in range(0, len(centers), CHUNK):
        index.add_with_ids(unit_rows(centers, a, a + CHUNK), np.ascontiguousarray(codes[a : a + CHUNK], np.int64))


SCAN_BYTES = 32  # a center's code in center_scan: 64 sub-vectors of 4 bits (product quantization, fast-scan)
RERANK = 64  # of center_scan's nearest, re-ranked by the exact cosine


def center_scan(n: int, train: np.ndarray):
    """Beyond EXACT_LIMIT centers (center_index is an IVF then), a second index over every center
    to search them all, compressed to SCAN_BYTES each (32 MB at 1M identities): for a face that
    matches no identity, whose nearest center is often outside the cells nearest to it (at 200K
    identities, 64 of 1,788 cells held a mislabelled face's true person for 85% of such faces;
    this scan and its RERANK nearest, 100%). Trained on ``train`` (center_index's sample); centers
    go in with add_centers. None for an exact center_index."""
    if n <= EXACT_LIMIT:
        return None
    faiss = require_module("faiss", "default")
    scan = faiss.IndexIDMap(faiss.IndexPQFastScan(train.shape[1], SCAN_BYTES * 2, 4, faiss.METRIC_INNER_PRODUCT))
    scan.train(unit_rows(train))
    return scan


def with_rows(index):
    """``index`` able to give back its vectors by id (an IVF keeps a map from id to list, 8 bytes
    an identity; its ids must be 0..ntotal-1): the centers are not held twice. Call again on an
    index read from a file, once every center is in."""
    if index is not None and hasattr(index, "nlist") and hasattr(index, "make_direct_map"):
        index.make_direct_map()
    return index


def center_rows(index, ids: np.ndarray) -> np.ndarray:
    """(len(ids), D) float32: the vectors of ``ids`` in ``index`` (with_rows)."""
    return index.reconstruct_batch(np.ascontiguousarray(ids, np.int64))


NEIGHBOURS = 16  # each identity's nearest other centers: its look-alikes, its faces' likeliest nearest others
EXACT_NEIGHBOURS = 250_000  # identities up to which they come from an exact search (I^2 D: 290 s at 200K, 2 cores)


def lookalikes(index, codes: np.ndarray, centers: np.ndarray, k: int = NEIGHBOURS,
               scan=None) -> tuple[np.ndarray, np.ndarray]:
    """(len(codes), k) the k nearest other centers in ``index`` (center_index, with_rows) of the
    identities ``codes``, whose centers are ``centers``, and their cosines (-1 past the last): the
    identities' look-alikes, for the merge candidates and their faces' nearest other identity
    (``nearest_other_identity``). A partition's identities at a time: no process holds every
    center but the index. Exact (the index's rows, CHUNK at a time) up to EXACT_NEIGHBOURS
    identities; beyond, ``scan``'s (center_scan) RERANK nearest re-ranked exactly. Look-alikes sit
    at cosines (0.3-0.6) where an IVF's cells do not hold them together: at 1M identities in
    families, 32 probes of the center index found 34% of an identity's family, the scan 96%."""
    n, m = (0 if index is None else index.ntotal), len(codes)
    if n < 2 or not m:
        return np.full((m, k), -1, np.int64), np.full((m, k), -1.0, np.float32)
    kk = min(k + 1, n)
    if n <= EXACT_NEIGHBOURS:
        faiss = require_module("faiss", "default")
        q = unit_rows(centers)
        sims, ids = np.full((m, 0), -np.inf, np.float32), np.zeros((m, 0), np.int64)
        for a in range(0, n, CHUNK):
            block = center_rows(index, np.arange(a, min(n, a + CHUNK)))
            s, i = faiss.knn(q, block, min(kk, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
            sims, ids = np.concatenate([sims, s], 1), np.concatenate([ids, i + a], 1)
            top = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
            sims, ids = np.take_along_axis(sims, top, 1), np.take_along_axis(ids, top, 1)
    else:
        ids = search(scan, centers, max(kk, RERANK))[1]
        sims = _exact(centers, np.arange(m), ids, index)
        top = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
        sims, ids = np.take_along_axis(sims, top, 1), np.take_along_axis(ids, top, 1)
    self_hit = ids == np.asarray(codes)[:, None]
    order = np.argsort(self_hit, axis=1, kind="stable")[:, : min(k, n - 1)]  # itself out, the rest in rank order
    ids, sims = np.take_along_axis(ids, order, 1), np.take_along_axis(sims, order, 1)
    pad = k - ids.shape[1]
    return (np.pad(ids, ((0, 0), (0, pad)), constant_values=-1).astype(np.int64),
            np.pad(sims, ((0, 0), (0, pad)), constant_values=-1.0).astype(np.float32))


def nearest_other_identity(emb: np.ndarray, codes: np.ndarray, index, group: np.ndarray | None = None,
                           neighbours: np.ndarray | None = None, unmatched_cos: float | None = None,
                           scan=None) -> tuple[np.ndarray, np.ndarray]:
    """For each face: the closest identity center outside its own identity's group, and that
    cosine (``index``: center_index of the centers; None for fewer than two identities; ``group``:
    (I,) group of each identity, e.g. the merge group of one person under several labels, whose
    labels are never each other's conflict; default: each identity its own).

    Candidates, the best cosine wins: the index's search (a face filed under the wrong person lies
    near that person's center, which an IVF finds); given ``neighbours`` ((I, K) every identity's
    look-alikes, lookalikes), the exact cosines to its own identity's look-alikes (a face of the
    right person is nearest one of them, among candidates too alike for an IVF to rank); and, for
    a face that does not match its own identity (below ``unmatched_cos``), the look-alikes of the
    best found so far (a face filed under an unrelated label whose search found one of its true
    person's family, not the person: a second hop). A face that matched nobody (its own center and
    best other both below ``unmatched_cos``) is first searched over every center (``scan``,
    center_scan), its RERANK nearest re-ranked exactly. At 200K identities in families of
    look-alikes (bench/center_search.py) the search alone found the true nearest other center for
    31% of faces. A ``codes`` value outside the identities (a face under
    no known label) uses the search alone."""
    if index is None:
        return np.full(len(emb), -1, np.int64), np.full(len(emb), -1.0, np.float32)
    group = np.arange(index.ntotal) if group is None else np.asarray(group)
    own = np.where(codes < len(group), group[np.minimum(codes, len(group) - 1)], -1)
    k = min(index.ntotal, 1 + int(np.unique(group, return_counts=True)[1].max()))
    sims, ids = search(index, emb, k)
    cand = csim = mine = None
    if neighbours is not None or unmatched_cos is not None:  # the face's own center, then its identity's look-alikes
        own_code = np.where(codes < index.ntotal, codes, -1)[:, None]
        alikes = (np.zeros((len(codes), 0), np.int64) if neighbours is None else
                  np.where((codes < len(neighbours))[:, None], neighbours[np.minimum(codes, len(neighbours) - 1)], -1))
        cand = np.c_[own_code, alikes]
        csim = _cosines(emb, np.arange(len(emb)), cand, index)
        mine, cand, csim = csim[:, 0], cand[:, 1:], csim[:, 1:]
    out, sim = _best_other(sims, ids, cand, csim, group, own)
    if unmatched_cos is None or not len(emb):
        return out, sim
    lost = np.flatnonzero((mine < unmatched_cos) & (sim < unmatched_cos))
    if len(lost) and scan is not None:
        near = search(scan, emb[lost], min(RERANK, scan.ntotal))[1]
        out[lost], sim[lost] = _best_other(sim[lost, None], out[lost, None], near, _exact(emb, lost, near, index),
                                           group, own[lost])
    hop = np.flatnonzero((mine < unmatched_cos) & (out >= 0)) if neighbours is not None else []
    if len(hop):
        far = neighbours[out[hop]]
        o, s = _best_other(sim[hop, None], out[hop, None], far, _cosines(emb, hop, far, index), group, own[hop])
        out[hop], sim[hop] = o, s
    return out, sim


def _cosines(emb: np.ndarray, rows: np.ndarray, cand: np.ndarray, index) -> np.ndarray:
    """(len(rows), K) the cosines of the faces ``rows`` of ``emb`` to the centers ``cand`` (-2
    where a candidate is -1). Faces with the same first candidate (one identity's look-alikes) go
    together, 512 at a time: each distinct center is read from the index once a chunk, and each
    face is multiplied by its own K only (a product with every center of the chunk cost 3-4x more
    at 200K identities)."""
    out = np.full(cand.shape, -2.0, np.float32)
    order = np.argsort(cand[:, 0], kind="stable") if cand.shape[1] else np.zeros(0, np.int64)
    for a in range(0, len(order), 512):
        r = order[a : a + 512]
        u, inv = np.unique(cand[r], return_inverse=True)
        centers = center_rows(index, np.maximum(u, 0))[inv.reshape(len(r), -1)]
        out[r] = np.matmul(centers, unit_rows(emb[rows[r]])[:, :, None])[..., 0]
    return np.where(cand >= 0, out, -2.0)


def _exact(emb: np.ndarray, rows: np.ndarray, cand: np.ndarray, index) -> np.ndarray:
    """(len(rows), K) the cosines of the faces ``rows`` of ``emb`` to their own candidates ``cand``
    (-2 where -1), 128 faces at a time."""
    out = np.full(cand.shape, -2.0, np.float32)
    for a in range(0, len(rows), 128):
        c = cand[a : a + 128]
        centers = center_rows(index, np.maximum(c, 0).ravel()).reshape(*c.shape, -1)
        out[a : a + 128] = np.einsum("nd,nkd->nk", unit_rows(emb[rows[a : a + 128]]), centers)
    return np.where(cand >= 0, out, -2.0)


def _best_other(sims, ids, cand, csim, group, own) -> tuple[np.ndarray, np.ndarray]:
    """The best candidate outside the row's own group (-1, -1.0 where none): the search's
    (``sims``, ``ids``) and the look-alikes' (``cand``, ``csim``; None for none)."""
    if cand is not None:
        sims, ids = np.concatenate([sims, csim], 1), np.concatenate([ids, cand], 1)
    other = (ids >= 0) & (group[np.maximum(ids, 0)] != own[:, None])
    best = np.where(other, sims, -np.inf).argmax(1)
    rows = np.arange(len(ids))
    found = other[rows, best]
    return (np.where(found, ids[rows, best], -1).astype(np.int64),
            np.where(found, sims[rows, best], -1.0).astype(np.float32))


def merge_candidates(a: np.ndarray, b: np.ndarray, sims: np.ndarray) -> list[tuple[int, int, float]]:
    """Identity pairs (x < y, their best cosine) from look-alike pairs (a, b) at the merge cosine
    or above (lookalikes' rows, those of several partitions concatenated): one person crawled
    under two labels. A pair seen from both sides counts once."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    hit = (b >= 0) & (a != b)
    out: dict[tuple[int, int], float] = {}
    for x, y, v in zip(np.minimum(a[hit], b[hit]).tolist(), np.maximum(a[hit], b[hit]).tolist(), np.asarray(sims)[hit].tolist()):
        out[(x, y)] = max(out.get((x, y), -1.0), v)
    return [(x, y, v) for (x, y), v in sorted(out.items())]
