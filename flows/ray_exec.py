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


@ray.remote(max_restarts=2, max_task_retries=2)
class CurateStage:
    """One worker: models loaded once in __init__, then shard after shard."""

    def __init__(self, out: str, allow_download: bool, gpu: bool):
        self.store = ShardStore(out)
        self.cfg = self.store.config()
        self.source = self.store.source()
        self.models = load_models(self.cfg, allow_download=allow_download, gpu=gpu)

    def run(self, shard: int, res: Resources) -> dict:
        if self.store.is_complete(shard):  # a retried or duplicated task must not redo work
            return self.store.marker(shard)
        return process_shard(self.store, self.source, shard, self.models, self.cfg, res)


def worker_count(res: Resources, pending: int) -> tuple[int, float]:
    """(actors, GPUs per actor) from what the cluster has: GPU actors only where GPUs exist."""
    resources = ray.cluster_resources()
    gpus = res.gpus_per_worker if resources.get("GPU", 0) >= res.gpus_per_worker > 0 else 0.0
    if res.gpus_per_worker and not gpus:
        log.warning("--gpus %s asked for, but the Ray cluster has no GPU: running on CPU", res.gpus_per_worker)
    if gpus:
        n = int(resources["GPU"] / gpus)
    else:
        n = res.workers or int(resources.get("CPU", 1))
    return max(1, min(n, pending)), gpus


def run_shards(out: str, res: Resources, allow_download: bool = False,
               on_shard: Callable[[dict], None] | None = None) -> Iterator[dict]:
    """Curate every pending shard of the run in ``out``; yields each shard's marker as it lands."""
    store = ShardStore(out)
    pending = store.pending()
    if not pending:
        return
    init_ray()
    n, gpus = worker_count(res, len(pending))
    actors = [CurateStage.options(num_cpus=1, num_gpus=gpus).remote(out, allow_download, gpus > 0) for _ in range(n)]
    try:
        for marker in ActorPool(actors).map_unordered(lambda a, s: a.run.remote(s, res), pending):
            if on_shard:
                on_shard(marker)
            yield marker
    finally:
        for a in actors:
            ray.kill(a)
