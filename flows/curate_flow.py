"""The ``curate`` Prefect flow: plan -> curate shards on Ray -> views and summary -> score ->
audits and report (the ``audit`` flow, as a subflow).

Runs on Prefect's local ephemeral API by default (nothing to start) and unchanged against a
Prefect server (PREFECT_API_URL). Tasks retry; shards are idempotent, so a retry redoes only the
shards without a completion marker. Each task is a step of ``curate.steps``, which also runs them
in process for a small crawl (``--engine``).
"""

from __future__ import annotations

import time

from prefect import flow, task

from curate import steps
from curate.config import Resources, ScoreConfig
from curate.errors import CurateError
from curate.io.shards import ShardStore
from curate.scoring import score_run
from flows.audit_flow import audit_flow
from flows.ray_exec import ray_map, run_shards


def _transient(task, task_run, state) -> bool:
    """Retry crashes and infrastructure errors, not a bad config, input or output directory."""
    return not isinstance(state.result(raise_on_failure=False), CurateError)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient)
def plan(store: ShardStore, input_path: str, config: dict, input_format: str | None, input_options: dict,
         allow_download: bool, resources: dict) -> dict:
    return steps.plan(store, input_path, config, input_format, input_options, allow_download, resources)[0]


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_transient)
def curate_shards(store: ShardStore, resources: dict, allow_download: bool, progress: bool) -> list[dict]:
    bar = steps.progress_bar(store, progress)
    try:
        return list(run_shards(store, Resources(**resources), allow_download, on_images=bar.update if bar else None))
    finally:
        if bar:
            bar.close()


finalize = task(steps.finalize)


@task(retry_condition_fn=_transient)
def score(store: ShardStore, score_config: dict, calibration: str | None = None) -> dict:
    """Label noise, duplicates and quality over all identities, partition by partition on Ray;
    keep/reason; curated shards."""
    return score_run(store, ScoreConfig(**score_config), calibration, mapper=ray_map)


@flow(name="curate", log_prints=False)
def curate_flow(input_path: str, out: str, config: dict, resources: dict, input_format: str | None = None,
                input_options: dict | None = None, allow_download: bool = False, progress: bool = True,
                score_config: dict | None = None, audit: bool = True, calibration: str | None = None) -> dict:
    t0 = time.perf_counter()
    store = ShardStore(out)  # the run's one handle, for every task (the plan creates the run in it)
    plan(store, input_path, config, input_format, input_options or {}, allow_download, resources)
    t1 = time.perf_counter()
    landed = curate_shards(store, resources, allow_download, progress)
    spine_s = time.perf_counter() - t1
    summary = finalize(store)
    if score_config is not None and summary["images"]:
        summary["curation"] = score(store, score_config, calibration)
        if audit:
            summary["audit"] = audit_flow(out)
    return steps.this_run(summary, landed, t0, "flow", spine_s)
