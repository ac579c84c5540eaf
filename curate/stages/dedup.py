"""dedup: near-duplicate images, faces nearer another identity, duplicate identities (faiss).

CPU faiss by default; with faiss-gpu installed, indexes move to the GPU. Exact search up to
``EXACT_LIMIT`` vectors, IVF beyond (nlist ~ 4 sqrt(N), nprobe 16), so 1M faces take seconds,
not an all-pairs pass.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from curate.errors import require_module

EXACT_LIMIT = 200_000


def _index(x: np.ndarray):
    faiss = require_module("faiss", "default")
    n, d = x.shape
    if n <= EXACT_LIMIT:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        index.train(x[rng.choice(n, min(n, 64 * nlist), replace=False)])
        index.nprobe = 16
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(x)
    return index


def near_duplicates(emb: np.ndarray, quality: np.ndarray, threshold: float = 0.97, sha1: list | None = None,
                    k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Clusters of the same photo (identical bytes, or embeddings with cosine >= threshold).
    Returns dup_of (N,) int64: the index of the cluster's best-quality face, -1 for that face and
    for faces with no duplicate; dup_sim (N,) float32: cosine to the nearest duplicate (0 if none)."""
    n = len(emb)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    sims, nbrs = _index(emb).search(emb, min(k, n))
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
    sims, ids = _index(centers).search(emb, 2)
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
