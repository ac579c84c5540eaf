"""facecurate.score_embeddings at scale: a synthetic memory-mapped .npy of N embeddings (identities
as clusters, 3% of faces filed under another identity), scored in one process; prints the time,
the peak memory and the label-noise precision/recall.

    .venv/bin/python bench/embeddings.py --faces 1000000 --identities 200000 --dim 512 --work /tmp/emb
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=1_000_000)
    ap.add_argument("--identities", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--noise", type=float, default=0.03)
    ap.add_argument("--work", default="bench-out/embeddings")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    path = os.path.join(args.work, f"emb-{args.faces}-{args.dim}.npy")
    rng = np.random.default_rng(0)
    label = rng.integers(0, args.identities, args.faces)
    truth = label.copy()
    flip = rng.random(args.faces) < args.noise
    truth[flip] = rng.integers(0, args.identities, int(flip.sum()))  # whose face it really is
    if not os.path.exists(path):
        out = np.lib.format.open_memmap(path, "w+", np.float32, (args.faces, args.dim))
        for a in range(0, args.faces, 100_000):
            b = min(a + 100_000, args.faces)
            c = np.stack([np.random.default_rng(int(t)).normal(size=args.dim) for t in truth[a:b]])  # the person's center
            c /= np.linalg.norm(c, axis=1, keepdims=True)
            x = c + rng.normal(scale=0.8 / np.sqrt(args.dim), size=c.shape)  # about 39 deg from the center
            out[a:b] = x * rng.uniform(15, 30, (b - a, 1))
        out.flush()
        del out
    emb = np.load(path, mmap_mode="r")
    import facecurate

    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flags = facecurate.score_embeddings(emb, np.char.add("id", label.astype(str)))
    secs = time.time() - t0
    reason = np.array(flags["reason"].to_pylist(), object)
    flagged = np.isin(reason, ["far_from_dominant", "cross_id_conflict"])
    tp = (flagged & flip).sum()
    print(f"faces {args.faces:,}  identities {args.identities:,}  dim {args.dim}: {secs:.0f} s, "
          f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB; "
          f"label noise precision {tp / max(flagged.sum(), 1):.3f} recall {tp / max(flip.sum(), 1):.3f}")


if __name__ == "__main__":
    main()
