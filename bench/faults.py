"""Crash drills, the benchmark variant of tests/test_faults.py: N trials (default 10) of killing a
real `curate run` (Prefect + Ray subprocesses) and resuming, each compared with an uninterrupted run.

    .venv/bin/python bench/faults.py [--trials 10] [--variants 4]

Trials alternate: SIGKILL of the driver and everything it started, at 0, 1, 2, 3 ... completed
shards (0 = right after the plan is written), then a rerun; or SIGKILL of one Ray worker mid-shard
(the actor restarts and the shard task is retried). A trial passes when the final rows (items,
image ids, sources, sha1, reasons, decisions, embeddings) equal the uninterrupted run's, with every
item exactly once. Results go to stdout and bench-out/faults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from curate.testing import faults


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--work", default="bench-out")
    args = ap.parse_args()
    from curate.sample import build_sample_crawl

    work = Path(args.work).resolve() / "faults"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    crawl = str(work / "crawl")
    build_sample_crawl(crawl, variants=args.variants)
    ref = str(work / "ref")
    r = faults.run(crawl, ref)
    assert r.returncode == 0, r.stdout + r.stderr
    want = faults.rows(ref)
    shards = json.load(open(os.path.join(ref, "run.json")))["shards"]
    trials = []
    for i in range(args.trials):
        out = str(work / f"t{i}")
        t0 = time.perf_counter()
        if i % 3 == 2:
            killed, proc, log = faults.kill_a_worker_mid_run(crawl, out)
            kind, detail, rc = "ray worker SIGKILL", {"killed": killed}, proc.returncode
        else:
            after = (i // 3 * 2 + i % 3) % shards
            at_kill, rr = faults.kill_driver_then_resume(crawl, out, after)
            kind, detail, rc = "driver SIGKILL + rerun", {"shards_done_at_kill": at_kill, "of": shards}, rr.returncode
        got = faults.rows(out) if rc == 0 else []
        ok = rc == 0 and got == want and [g[0] for g in got] == list(range(len(want)))
        trials.append({"trial": i, "kind": kind, **detail, "rc": rc, "identical": ok,
                       "leftover_temp_files": len(faults.leftovers(out)), "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(trials[-1]), flush=True)
    summary = {"images": len(want), "shards": shards, "passed": sum(t["identical"] for t in trials), "trials": trials}
    print(f"{summary['passed']} of {len(trials)} trials identical to the uninterrupted run")
    (Path(args.work) / "faults.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
