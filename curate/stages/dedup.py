"""dedup: near-duplicate images, faces nearer another identity, duplicate identities (faiss).

CPU faiss by default; with faiss-gpu installed, indexes move to the GPU. Exact search up to
``EXACT_LIMIT`` vectors, IVF beyond (nlist ~ 4 sqrt(N), 20 training points a list, nprobe 4-16):
an all-pairs pass over 100K faces already costs 5e12 FLOPs, minutes on 2 cores, while what we look
for (the same photo, the nearest identity center) is close enough for IVF to find it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from curate.errors import require_module

EXACT_LIMIT = 10_000


def _index(x: np.ndarray, nprobe: int = 16, fp16: bool = False):
    """Inner-product index over x: exact up to EXACT_LIMIT rows, IVF beyond (stored as fp16 when
    asked: half the memory of a float32 copy, and exact enough for cosine thresholds)."""
    faiss = require_module("faiss", "default")
    n, d = x.shape
    if n <= EXACT_LIMIT:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(4 * np.sqrt(n))
        quantizer = faiss.IndexFlatIP(d)
        if fp16:
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16,
                                                  faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 5
        index.cp.min_points_per_centroid = 10
        rng = np.random.default_rng(0)
        index.train(x[rng.choice(n, min(n, 20 * nlist), replace=False)])
        index.nprobe = nprobe
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(x)
    return index


def near_duplicates(emb: np.ndarray, quality: np.ndarray, threshold: float = 0.97, sha1: list | None = None,
                    k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Clusters of the same photo (identical bytes, or embeddings with cosine >= threshold).
    Returns dup_of (N,) int64: the index of the cluster's best-quality face, -1 for that face and
    for faces with no duplicate; dup_sim (N,) float32: cosine to the nearest duplicate (0 if none)."""
    n = len(emb)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    # Duplicates (cosine >= ~0.97) share the query's IVF cell almost always: 4 probes suffice.
    sims, nbrs = _index(emb, nprobe=4, fp16=True).search(emb, min(k, n))
    rows = np.repeat(np.arange(n), nbrs.shape[1])
    cols, s = nbrs.ravel(), sims.ravel()
    edge = (cols >= 0) & (cols != rows) & (s >= threshold)
    r, c = [rows[edge]], [cols[edge]]
    dup_sim = np.zeros(n, np.float32)
    np.maximum.at(dup_sim, rows[edge], s[edge])
    if sha1 is not None:  # identical bytes are duplicates whatever the model says
        first: dict = {}
        for i, h in enumerate(sha1):
            if h is not None:
                j = first.setdefault(h, i)
                if j != i:
                    r.append(np.array([i]))
                    c.append(np.array([j]))
                    dup_sim[[i, j]] = 1.0
    r, c = np.concatenate(r), np.concatenate(c)
    graph = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # representative: best quality in the component
    order = np.lexsort((-quality, comp))
    first = np.ones(n, bool)
    first[1:] = comp[order][1:] != comp[order][:-1]
    rep = np.empty(n, np.int64)
    rep[comp[order][first]] = order[first]
    dup_of = rep[comp]
    sizes = np.bincount(comp, minlength=comp.max() + 1)
    dup_of[(dup_of == np.arange(n)) | (sizes[comp] == 1)] = -1
    return dup_of, dup_sim


def nearest_other_identity(emb: np.ndarray, codes: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each face: the closest identity center other than its own, and that cosine."""
    if len(centers) < 2:
        return np.full(len(emb), -1, np.int64), np.full(len(emb), -1.0, np.float32)
    sims, ids = _index(centers, nprobe=8).search(emb, 2)
    own_first = ids[:, 0] == codes
    other = np.where(own_first, ids[:, 1], ids[:, 0])
    sim = np.where(own_first, sims[:, 1], sims[:, 0]).astype(np.float32)
    return other.astype(np.int64), sim


def merge_candidates(centers: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Identity pairs (a < b) whose dominant centers have cosine >= threshold: one person crawled
    under two labels."""
    if len(centers) < 2:
        return []
    sims, ids = _index(centers).search(centers, min(8, len(centers)))
    out: dict[tuple[int, int], float] = {}
    for a in range(len(centers)):
        for s, b in zip(sims[a], ids[a]):
            if b >= 0 and b != a and s >= threshold:
                key = (min(a, int(b)), max(a, int(b)))
                out[key] = max(out.get(key, -1.0), float(s))  # each pair is seen from both sides
    return [(a, b, s) for (a, b), s in sorted(out.items())]
