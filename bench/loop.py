"""Before/after, over seeds: on each benchmark crawl's curated run (``curate bench`` output), train
the same recipe on the raw crawl and on the curated faces and verify both on held-out people
(``curate.loop.compare``: what ``curate loop`` does between its rounds), plus the paper's K=3->1.

    .venv/bin/python bench/loop.py bench-out/bench [bench-out/bench-hi ...] [--holdout-seed 7]

Prints, per benchmark directory and recipe, the mean and spread over the tuning seeds of TAR at
FAR 1e-3 and accuracy for the frozen base model, the raw-crawl model and the curated model, and
the held-out seed apart; writes DIR/loop-bench.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("benches", nargs="+")
    ap.add_argument("--holdout-seed", type=int, default=7, help="the benchmark's held-out seed, reported apart")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--recipes", nargs="+", default=["curated", "k3"])
    args = ap.parse_args()
    from curate.loop import compare

    for bench in args.benches:
        out = {}
        for recipe in args.recipes:
            rows = {}
            for run in sorted(glob.glob(os.path.join(bench, "seed-*", "run"))):
                seed = int(run.split("seed-")[1].split(os.sep)[0])
                t0 = time.time()
                m, _, _ = compare(run, seed=seed, epochs=args.epochs, recipe=recipe)
                m["seconds"] = round(time.time() - t0, 1)
                rows[seed] = m
                print(bench, recipe, seed, {k: (m[k]["tar_at_far"]["0.001"], round(m[k]["accuracy"], 4))
                                            for k in ("base", "noisy", "curated")}, flush=True)
            tuning = [m for s, m in rows.items() if s != args.holdout_seed]
            agg = {}
            for k in ("base", "noisy", "curated"):
                tar = [m[k]["tar_at_far"]["0.001"] for m in tuning]
                acc = [m[k]["accuracy"] for m in tuning]
                held = rows.get(args.holdout_seed, {}).get(k)
                agg[k] = {"tar_1e-3": [round(float(np.mean(tar)), 4), round(float(np.std(tar)), 4)],
                          "accuracy": [round(float(np.mean(acc)), 4), round(float(np.std(acc)), 4)],
                          "held_out_seed": {"tar_1e-3": held["tar_at_far"]["0.001"], "accuracy": held["accuracy"]} if held else None}
            diff = [m["curated"]["tar_at_far"]["0.001"] - m["noisy"]["tar_at_far"]["0.001"] for m in tuning]
            agg["curated_minus_noisy_tar_1e-3"] = [round(float(np.mean(diff)), 4), round(float(np.std(diff)), 4)]
            out[recipe] = {"seeds": rows, "summary": agg}
            print(json.dumps({bench: {recipe: agg}}, indent=1), flush=True)
        with open(os.path.join(bench, "loop-bench.json"), "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
