"""Ray adapter: a pool of actors, each loading the detector and recognizer once, each taking whole
shards (the unit of work, retry and resume). Local Ray by default; RAY_ADDRESS joins a cluster."""

from __future__ import annotations

import logging
import os
from typing import Callable, Iterator

import ray
from ray.util import ActorPool

from curate.config import Resources
from curate.io.shards import ShardStore
from curate.pipeline import load_models, process_shard

log = logging.getLogger(__name__)


def init_ray(num_cpus: int | None = None) -> None:
    """Start local Ray (no dashboard, no server to run) or join RAY_ADDRESS. Idempotent."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False


@ray.remote(num_cpus=0)
class Progress:
    """Images processed so far (not yet committed): lets the driver's bar move within a shard."""

    def __init__(self):
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


@ray.remote(max_restarts=2, max_task_retries=2)
class CurateStage:
    """One worker: models loaded once in __init__, then shard after shard."""

    def __init__(self, out: str, allow_download: bool, gpu: bool, threads: int = 1):
        # Plain values only: a restarted actor (max_restarts) is rebuilt from these arguments.
        self.store = ShardStore(out)
        self.cfg = self.store.config()
        self.source = self.store.source()
        self.models = load_models(self.cfg, allow_download=allow_download, gpu=gpu, threads=threads)

    def run(self, shard: int, res: Resources, progress=None) -> dict:
        if self.store.is_complete(shard):  # a retried or duplicated task must not redo work
            return self.store.marker(shard)
        report = (lambda n: progress.add.remote(n)) if progress else None
        return process_shard(self.store, self.source, shard, self.models, self.cfg, res, on_batch=report)


def worker_count(res: Resources, pending: int) -> tuple[int, float]:
    """(actors, GPUs per actor) from what the cluster has: GPU actors only where GPUs exist."""
    resources = ray.cluster_resources()
    gpus = res.gpus_per_worker if resources.get("GPU", 0) >= res.gpus_per_worker > 0 else 0.0
    if res.gpus_per_worker and not gpus:
        log.warning("--gpus %s asked for, but the Ray cluster has no GPU: running on CPU", res.gpus_per_worker)
    if gpus:
        n = int(resources["GPU"] / gpus)
    else:
        n = res.workers or max(1, int(resources.get("CPU", 1)) // res.threads_per_worker)
    return max(1, min(n, pending)), gpus


def run_shards(out: str, res: Resources, allow_download: bool = False,
               on_images: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Curate every pending shard of the run in ``out``; yields each shard's marker as it lands.
    ``on_images(n)`` hears of images as workers finish batches (for a progress bar)."""
    store = ShardStore(out)
    pending = store.pending()
    if not pending:
        return
    init_ray()
    n, gpus = worker_count(res, len(pending))
    progress = Progress.remote() if on_images else None
    t = res.threads_per_worker
    actors = [CurateStage.options(num_cpus=t, num_gpus=gpus).remote(out, allow_download, gpus > 0, t) for _ in range(n)]
    pool = ActorPool(actors)
    for shard in pending:
        pool.submit(lambda a, s: a.run.remote(s, res, progress), shard)
    try:
        while pool.has_next():
            try:
                marker = pool.get_next_unordered(timeout=1.0)
            except TimeoutError:
                marker = None
            if on_images:
                on_images(ray.get(progress.take.remote()))
            if marker is not None:
                yield marker
        if on_images:  # reports still in flight when the last shard landed
            on_images(ray.get(progress.take.remote()))
    except BaseException:
        for a in actors:
            ray.kill(a)
        raise
    # done: the workers exit gracefully when their handles go out of scope (ray.kill's SIGTERM
    # makes each print a stack dump)
    del pool, actors
