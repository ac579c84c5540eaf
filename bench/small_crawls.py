"""Small real crawls with one planted label swap: how many clean faces does curation reject?

    .venv/bin/python bench/small_crawls.py [--seeds 0 1 2] [--python .venv/bin/python] [--repo .]

Builds crawls of 1 to 5 identities (5 to 10 photos each, drawn from the web sources of
../shared/data/faces: LFW, opencv-course, sports celebrities, deepface, face_recognition) and, in
all but the one-identity crawls, files one photo of another person under the first identity. Each
crawl goes through `curate run` exactly as a user runs it (defaults, --json), and the result is
scored against the truth:

  clean rejected   clean faces the curation's *scoring* rejected (duplicate, far_from_dominant,
                   cross_id_conflict, unidentifiable, identity_merge_candidate), over clean faces
                   that reached scoring (a face was found and embedded)
  swap caught      planted swaps rejected as far_from_dominant or cross_id_conflict

``--repo`` and ``--python`` run another checkout (e.g. the previous release, for a before/after
comparison); the crawls are the same. The sports-celebrity folders hold real label noise of their
own, so a 'clean' rejection there is not always a mistake: the per-source counts say where they
fall. Not a test: it takes minutes. Results go to stdout and --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
WEB = ("lfw__", "opencvcourse__", "sportsceleb__", "deepface__", "facerec__")
SCORING = {"duplicate", "far_from_dominant", "cross_id_conflict", "unidentifiable", "identity_merge_candidate",
           "non_dominant_subcenter"}


def build(dest: Path, seed: int, n_ids: int) -> dict[str, str]:
    rng = np.random.default_rng(seed * 100 + n_ids)
    people = sorted(d for d in FACES.iterdir() if d.is_dir() and d.name.startswith(WEB) and len(list(d.iterdir())) >= 6)
    chosen = [people[i] for i in rng.choice(len(people), n_ids + 1, replace=False)]
    truth = {}
    for d in chosen[:n_ids]:
        photos = sorted(d.iterdir())
        for p in [photos[i] for i in sorted(rng.choice(len(photos), min(len(photos), int(rng.integers(5, 11))), replace=False))]:
            (dest / d.name).mkdir(parents=True, exist_ok=True)
            (dest / d.name / p.name).write_bytes(p.read_bytes())
            truth[f"{d.name}/{p.name}"] = "clean"
    if n_ids > 1:
        other = sorted(chosen[n_ids].iterdir())
        p = other[int(rng.integers(len(other)))]
        (dest / chosen[0].name / f"zz_swap_{p.name}").write_bytes(p.read_bytes())
        truth[f"{chosen[0].name}/zz_swap_{p.name}"] = "swap"
    return truth


def reasons(python: str, repo: str, crawl: Path, out: Path) -> tuple[dict[str, str], dict]:
    env = {**os.environ, "PYTHONPATH": repo, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "ERROR"}
    p = subprocess.run([python, "-m", "curate.cli", "run", str(crawl), "--out", str(out), "--no-progress", "--json",
                        "--no-audit"], capture_output=True, text=True, cwd=repo, env=env)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    summary = json.loads(p.stdout[p.stdout.index("{"):])
    import duckdb

    con = duckdb.connect(str(out / "curate.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT i.source, s.reason FROM scores s JOIN images i USING (image_id)").fetchall()
    finally:
        con.close()
    return dict(rows), summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--out", default="bench-out/small_crawls.json")
    args = ap.parse_args()
    tot = Counter()
    by_reason, by_source, far = Counter(), Counter(), []
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for n in args.sizes:
                crawl = Path(tmp) / f"crawl-{seed}-{n}"
                truth = build(crawl, seed, n)
                got, summary = reasons(args.python, args.repo, crawl, Path(tmp) / f"out-{seed}-{n}")
                cur = summary.get("curation", {})
                far.append(cur.get("far_angle"))
                clean = [s for s, t in truth.items() if t == "clean" and got.get(s) not in (None, "no_face", "decode_error",
                                                                                          "multi_face_ambiguous", "too_small")]
                rej = [s for s in clean if got[s] in SCORING]
                swaps = [s for s, t in truth.items() if t == "swap"]
                caught = [s for s in swaps if got.get(s) in ("far_from_dominant", "cross_id_conflict")]
                tot.update(clean=len(clean), rejected=len(rej), swaps=len(swaps), caught=len(caught))
                by_reason.update(got[s] for s in rej)
                by_source.update(s.split("__")[0] for s in rej)
                runs.append({"seed": seed, "identities": n, "faces": len(truth), "clean_scored": len(clean),
                             "clean_rejected": len(rej), "swap_caught": len(caught), "swaps": len(swaps),
                             "far_angle": cur.get("far_angle")})
                print(f"seed {seed} ids {n}: {len(rej)}/{len(clean)} clean rejected {dict(Counter(got[s] for s in rej))}, "
                      f"swap caught {len(caught)}/{len(swaps)}, far angle {cur.get('far_angle')}", flush=True)
    result = {"repo": args.repo, "runs": runs, "clean_scored": tot["clean"], "clean_rejected": tot["rejected"],
              "false_rejection_rate": tot["rejected"] / max(tot["clean"], 1), "swaps": tot["swaps"],
              "swaps_caught": tot["caught"], "rejected_by_reason": dict(by_reason), "rejected_by_source": dict(by_source)}
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
