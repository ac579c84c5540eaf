"""The steps of ``curate run`` as plain functions: plan, curate the shards, finalize, score, audit
and report. The Prefect flows (``flows/curate_flow.py``, ``flows/audit_flow.py``) run each step as
a task, the shards on Ray; ``run_in_process`` runs the same steps one after the other in this
process, with no Ray and no Prefect to start: the engine for a small crawl, where starting them
costs more than the work (a 20-photo crawl: about 17 s of start-up for under 3 s of work).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterator

from curate.config import Resources, RunConfig, ScoreConfig
from curate.io.shards import ShardStore
from curate.io.sources import open_source
from curate.pipeline import Models, load_models, process_shard

IN_PROCESS_MAX = 2000  # images: up to this, ``--engine auto`` curates in this process (see docs/throughput.md)


def engine_for(requested: str, images: int, res: Resources) -> tuple[str, str]:
    """('local' or 'flow', why). ``auto`` runs a crawl of at most IN_PROCESS_MAX images in this
    process, unless a Ray cluster or a Prefect server is named (RAY_ADDRESS, PREFECT_API_URL) or
    GPUs are asked for: those mean the user wants the flow."""
    if requested != "auto":
        return requested, f"--engine {requested}"
    named = [k for k in ("RAY_ADDRESS", "PREFECT_API_URL") if os.environ.get(k)]
    if named:
        return "flow", f"{named[0]} is set"
    if res.gpus_per_worker:
        return "flow", "--gpus asked for Ray's GPU workers"
    if images <= IN_PROCESS_MAX:
        return "local", f"{images} images <= {IN_PROCESS_MAX}: in this process, without Ray or Prefect"
    return "flow", f"{images} images > {IN_PROCESS_MAX}: Prefect flow, shards on Ray"


def plan(store: ShardStore, input_path: str, config: dict, input_format: str | None, input_options: dict,
         allow_download: bool, resources: dict, threads: int = 1) -> tuple[dict, Models]:
    """The run planned (or resumed) in ``store`` and its models loaded: a bad model fails here,
    once, not in every worker. The recognizer's card is recorded for scoring."""
    cfg = RunConfig.from_dict(config)
    models = load_models(cfg, allow_download=allow_download, threads=threads)
    source = open_source(input_path, input_format, **input_options)
    res = Resources(**resources)
    manifest = store.open_run(source, cfg, res.local_workers())
    store.record_recognizer(models.recognizer, models.detector)
    return manifest, models


def progress_bar(store: ShardStore, progress: bool):
    """A tqdm bar over the run's images, started at those already done; None without progress."""
    if not progress:
        return None
    from tqdm import tqdm

    done = sum(m["images"] for m in store.markers())
    return tqdm(total=store.manifest["items"], initial=done, unit="img", desc="curate", smoothing=0.1)


def shards_in_process(store: ShardStore, models: Models, res: Resources, lanes: int = 1, allow_download: bool = False,
                      on_images: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Every pending shard of the run on ``lanes`` threads, each with a model set of its own
    (``models`` the first; the others load in their threads) whose onnxruntime sessions take
    ``res.threads_per_worker`` threads, as a Ray worker's. Yields each shard's marker as it lands
    (the same commit, marker last, as a Ray worker's: a killed run resumes with the rest). The
    models release the GIL, so two lanes keep two cores busy where one lane's two-thread sessions
    did not: detection gains nothing from a second thread (docs/throughput.md)."""
    cfg, source = store.config(), store.source()
    spare: queue.SimpleQueue = queue.SimpleQueue()
    spare.put(models)
    own = threading.local()

    def one(shard: int) -> dict:
        if not hasattr(own, "models"):
            try:
                own.models = spare.get_nowait()
            except queue.Empty:
                own.models = load_models(cfg, allow_download=allow_download, threads=res.threads_per_worker)
        return process_shard(store, source, shard, own.models, cfg, res, on_batch=on_images)

    with ThreadPoolExecutor(max(1, lanes), thread_name_prefix="lane") as pool:
        for done in as_completed([pool.submit(one, shard) for shard in store.pending()]):
            yield done.result()


def finalize(store: ShardStore) -> dict:
    store.remove_stale_temp_files()  # every shard landed: temp files left by a killed run are garbage
    store.write_views()
    return store.summary()


def audit(out: str, fmt: str = "parquet", sql_dir: str | None = None, scores: str | None = None) -> dict:
    """Every sql/ question over a scored run -> result files in OUT/audit-<digest>/; questions
    whose source is missing (no attributes yet) are listed with the reason, not failed."""
    from curate import audit as A
    from curate.errors import InputError

    store = ShardStore.of(out)
    digest = store.resolve_scoring(scores)
    if not digest:
        raise InputError(f"{store.out}: not scored yet (run `curate score {store.out}`)")
    dest = store.audit_dir(digest)
    os.makedirs(dest, exist_ok=True)
    con = A.connect(store, score_digest=digest)
    try:
        have = A.views(con)
        written, skipped = {}, {}
        for name, q in A.queries(sql_dir).items():
            msg = A.missing_message(q, have)
            if msg:
                skipped[name] = msg
                continue
            t = A.run_query(con, q)
            written[name] = {"rows": t.num_rows, "path": A.write_result(t, fmt, os.path.join(dest, name))}
    finally:
        con.close()
    return {"dir": dest, "digest": digest, "written": written, "skipped": skipped}


def report(out: str, scores: str | None = None) -> str:
    from curate.report import build_report

    return build_report(out, scores=scores)


def this_run(summary: dict, landed: list[dict], t0: float, engine: str, spine_s: float) -> dict:
    """The summary with what this run did: shards and images, its seconds in all and in the spine
    (decode to embed, over every shard), images per second of each."""
    wall = time.perf_counter() - t0
    n_new = sum(m["images"] for m in landed)
    summary["this_run"] = {"shards": len(landed), "images": n_new, "seconds": round(wall, 2),
                           "images_per_s": round(n_new / wall, 2) if wall > 0 else None, "engine": engine,
                           "spine_seconds": round(spine_s, 2),
                           "spine_images_per_s": round(n_new / spine_s, 2) if n_new and spine_s > 0 else None}
    return summary


def run_in_process(input_path: str, out: str, config: dict, resources: dict, input_format: str | None = None,
                   input_options: dict | None = None, allow_download: bool = False, progress: bool = True,
                   score_config: dict | None = None, audit_after: bool = True, calibration: str | None = None) -> dict:
    """The curate flow's steps in this process (``flows.curate_flow.curate_flow`` takes the same
    arguments): the shards on a thread a core, each with its models (shards_in_process); scoring
    runs its steps in process. Results equal the flow's."""
    from curate.scoring import score_run

    t0 = time.perf_counter()
    store = ShardStore(out)
    res = Resources(**resources)
    _, models = plan(store, input_path, config, input_format, input_options or {}, allow_download, resources,
                     threads=res.threads_per_worker)
    lanes = min(res.local_workers(), len(store.pending()))
    bar = progress_bar(store, progress)
    t1 = time.perf_counter()
    try:
        landed = list(shards_in_process(store, models, res, lanes, allow_download, bar.update if bar else None))
    finally:
        if bar:
            bar.close()
    spine_s = time.perf_counter() - t1
    summary = finalize(store)
    if score_config is not None and summary["images"]:
        summary["curation"] = score_run(store, ScoreConfig(**score_config), calibration)
        if audit_after:
            summary["audit"] = audit(out)
            summary["audit"]["report"] = report(out, summary["audit"]["digest"])
    return this_run(summary, landed, t0, "local", spine_s)
