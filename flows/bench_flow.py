"""The ``bench`` Prefect flow: for each seed, build a noisy crawl with its truth from real faces
(curate.benchmark), curate it with the ``curate`` flow exactly as ``curate run`` does, then score
the run against the truth: metrics, error-versus-discard curves, threshold sweeps, the cleanlab
baseline where installed. Each seed's run gets the benchmark in its HTML report; ``OUT/bench.json``
holds the mean and spread over the tuning seeds and, apart, the held-out seed.

Layout: ``OUT/seed-<s>/crawl`` (the crawl), ``OUT/seed-<s>/run`` (the curate run, its
``truth.parquet`` and ``bench/``: metrics.json, per_kind, edc, sweep). Rerunning resumes: a
built crawl is reused and the run resumes like any ``curate run``.
"""

from __future__ import annotations

import os
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from curate import benchmark as B
from curate.errors import InputError
from curate.files import atomic_write, write_json
from curate.io.shards import ShardStore
from flows.curate_flow import curate_flow


@task(cache_policy=NO_CACHE)
def build(faces: str, crawl: str, noise: dict, seed: int, detector: str) -> str:
    """The crawl and its truth (kept beside the crawl until the run exists)."""
    truth_path = crawl + ".truth.parquet"
    if os.path.exists(truth_path):  # resume: the crawl must be the one these settings build
        meta = pq.read_schema(truth_path).metadata or {}
        want = {b"noise": str(asdict(B.Noise(**noise))).encode(), b"seed": str(seed).encode(),
                b"faces": os.path.abspath(faces).encode()}
        diff = [k.decode() for k, v in want.items() if meta.get(k) != v]
        if diff:
            raise InputError(f"{crawl} was built with other settings ({', '.join(diff)} differ): "
                             "use a new --out, or remove it to rebuild")
        return truth_path
    from models import DETECTORS

    det = DETECTORS.build(detector)
    tmp = crawl + ".building"
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    truth = B.build_crawl(faces, tmp, B.Noise(**noise), seed, det)
    os.replace(tmp, crawl)
    B.write_truth(truth, truth_path, B.Noise(**noise), seed, faces)
    return truth_path


@task(cache_policy=NO_CACHE)
def measure(run: str, truth_path: str, seed: int, faces: str, baseline: bool, sweeps: bool) -> dict:
    from curate.scoring import run_calibration

    truth = pq.read_table(truth_path)
    store = ShardStore.of(run)
    atomic_write(store.truth_file(), lambda tmp: pq.write_table(truth, tmp))
    digest = store.current_scoring()
    identities = pq.read_table(store.identities_file(digest))
    t = B.joined(run, truth)
    m = B.evaluate(t, identities)
    d = store.bench_dir()
    os.makedirs(d, exist_ok=True)
    curve = B.edc(t)
    atomic_write(os.path.join(d, "edc.parquet"), lambda tmp: pq.write_table(curve, tmp))
    m["edc_mean_fnmr_to_30pct"] = B.edc_summary(curve)
    if sweeps:
        cal = run_calibration(store)[0]
        sw = B.sweep(run, truth, cal)
        atomic_write(os.path.join(d, "sweep.parquet"), lambda tmp: pq.write_table(sw, tmp))
    if baseline:
        m["baseline"] = B.cleanlab_baseline(t, seed=seed)
        m["phash_baseline"] = B.phash_baseline(os.path.join(os.path.dirname(run), "crawl"), t)
    m.update({"seed": seed, "faces": faces, "scores": digest})
    write_json(os.path.join(d, "metrics.json"), m)
    from curate.report import build_report

    m["report"] = build_report(run)
    return m


SUMMARY = (("purity", ("purity",)), ("clean retention", ("clean_retention",)),
           ("clean retention, detected faces", ("clean_retention_detected",)),
           ("label noise precision", ("label_noise", "precision")), ("label noise recall", ("label_noise", "recall")),
           ("label noise rejected, any reason", ("label_noise_rejected_overall",)),
           ("duplicate pair recall", ("duplicates", "recall")), ("duplicate precision", ("duplicates", "precision")),
           *((f"duplicate recall, {k}", ("duplicates", "per_kind", k, "recall")) for k in B.COPY_KINDS),
           ("distinct web photo pairs called duplicate", ("distinct_pairs_called_duplicate", "web", "share")),
           ("distinct lab-sitting pairs called duplicate", ("distinct_pairs_called_duplicate", "lab", "share")),
           ("group photos: a face chosen", ("groups", "chosen_share")),
           ("group photos kept with the labelled person's face", ("groups", "right_share")),
           ("merge recall", ("merges", "recall")), ("merge precision", ("merges", "precision")),
           ("unidentifiable precision", ("unidentifiable", "precision")),
           ("unidentifiable recall", ("unidentifiable", "recall")),
           ("unidentifiable recall, copies not matched", ("unidentifiable_unmatched", "recall")),
           ("degraded copies identified (matched, kept)", ("unidentifiable_matched_share",)),
           ("degraded copies rejected, any reason", ("unidentifiable_rejected_overall",)),
           ("clean faces rejected as unidentifiable", ("clean_rejected_unidentifiable",)),
           ("clean faces the recognizer cannot verify (of half their person's)", ("clean_unverified",)),
           ("... clean faces it verifies, rejected as unidentifiable", ("verified_clean_rejected_unidentifiable",)),
           ("unidentifiable precision, those counted as unidentifiable", ("unidentifiable_by_recognition", "precision")),
           ("unidentifiable recall, those counted as unidentifiable", ("unidentifiable_by_recognition", "recall")),
           ("non-faces rejected", ("nonface_rejected",)))


def empty_kinds(out: str, noise: dict) -> list[str]:
    """A warning for each kind of noise asked for that no seed's crawl got (settings too small)."""
    asked = [k for k in B.KINDS if k not in ("clean",) and (noise.get(k) or 0) > 0]
    got: dict[str, int] = {}
    for f in sorted(os.listdir(out)):
        p = os.path.join(out, f, "crawl.truth.parquet")
        if os.path.exists(p):
            for k in pq.read_table(p, columns=["kind"])["kind"].to_pylist():
                got[k] = got.get(k, 0) + 1
    return [f"--{k} asks for {noise[k]} but no crawl got any: too few people or photos (--max-photos, the source)"
            for k in asked if not got.get(k)]


def _get(m: dict, path):
    for k in path:
        m = m.get(k) if isinstance(m, dict) else None
    return m


def aggregate(results: dict[int, dict], holdout: int | None) -> dict:
    """Mean and standard deviation over the tuning seeds, and the held-out seed on its own."""
    tuning = [m for s, m in results.items() if s != holdout]
    rows = []
    keys = list(SUMMARY) + [(f"EDC {sig} (mean FNMR, 0-30% discarded)", ("edc_mean_fnmr_to_30pct", sig))
                            for sig in B.EDC_SIGNALS]
    if tuning and "baseline" in tuning[0]:
        keys += [("cleanlab precision", ("baseline", "cleanlab", "precision")),
                 ("cleanlab recall", ("baseline", "cleanlab", "recall")),
                 ("ours precision (same faces)", ("baseline", "ours_same_faces", "precision")),
                 ("ours recall (same faces)", ("baseline", "ours_same_faces", "recall"))]
        keys += [(f"pHash-only recall, {k}", ("phash_baseline", "per_kind", k, "recall")) for k in B.COPY_KINDS]
        keys += [(f"pHash-only distinct {s} pairs called duplicate",
                  ("phash_baseline", "distinct_pairs_called_duplicate", s, "share")) for s in ("web", "lab")]
    for name, path in keys:
        vals = [v for v in (_get(m, path) for m in tuning) if v is not None]
        held = _get(results[holdout], path) if holdout in results else None
        rows.append({"metric": name, "mean": round(float(np.mean(vals)), 4) if vals else None,
                     "std": round(float(np.std(vals)), 4) if len(vals) > 1 else None,  # one seed: no spread
                     "seeds": len(vals), "held_out": held})
    return {"tuning_seeds": sorted(s for s in results if s != holdout), "held_out_seed": holdout, "table": rows}


@flow(name="bench")
def bench_flow(faces: str, out: str, seeds: list[int], noise: dict, config: dict, resources: dict,
               score_config: dict, holdout: int | None = None, baseline: bool = False, sweeps: bool = True,
               progress: bool = False) -> dict:
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    results = {}
    for seed in [*seeds, *([holdout] if holdout is not None and holdout not in seeds else [])]:
        d = os.path.join(out, f"seed-{seed}")
        os.makedirs(d, exist_ok=True)
        crawl, run = os.path.join(d, "crawl"), os.path.join(d, "run")
        truth_path = build(faces, crawl, noise, seed, config["detect"]["detector"])
        curate_flow(input_path=crawl, out=run, config=config, resources=resources, input_format="folder",
                    progress=progress, score_config=score_config, audit=False)
        results[seed] = measure(run, truth_path, seed, faces, baseline, sweeps)
    summary = {"faces": os.path.abspath(faces), "noise": noise, **aggregate(results, holdout),
               "warnings": empty_kinds(out, noise),
               "runs": {str(s): {"run": os.path.join(out, f"seed-{s}", "run"), "report": m.get("report")}
                        for s, m in results.items()}}
    write_json(os.path.join(out, "bench.json"), summary)
    table = pa.Table.from_pylist(summary["table"])
    atomic_write(os.path.join(out, "bench.parquet"), lambda tmp: pq.write_table(table, tmp))
    return summary


def print_table(summary: dict) -> str:
    lines = [f"{'metric':<52} {'mean':>8} {'std':>8} {'held-out':>9}"]
    for r in summary["table"]:
        f = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"{r['metric']:<52} {f(r['mean']):>8} {f(r['std']):>8} {f(r['held_out']):>9}")
    lines += [f"seed {s:<5} {m['run']}  (report {m['report']})" for s, m in summary["runs"].items()]
    lines += [f"WARNING      {w}" for w in summary.get("warnings", [])]
    return "\n".join(lines)
