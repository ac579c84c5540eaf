"""Ray adapter: a pool of actors, each loading the detector and recognizer once, each taking whole
shards (the unit of work, retry and resume). Local Ray by default; RAY_ADDRESS joins a cluster."""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Callable, Iterator

import ray
import ray.util.scheduling_strategies

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


@ray.remote(max_restarts=0, max_task_retries=0)
class CurateStage:
    """One worker: models loaded once in __init__, then shard after shard. A worker that dies (its
    process or its node) is not restarted by Ray: ``run_shards`` puts its shard back in the queue
    and starts a replacement where the cluster has room (a restart would wait for the lost node's
    resources, forever)."""

    def __init__(self, store: ShardStore, allow_download: bool, gpu: bool, threads: int = 1):
        self.store = store
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


MAX_LOST = 20  # workers lost in one run before it gives up (a crash loop, not a flaky node)


def run_shards(store: ShardStore, res: Resources, allow_download: bool = False,
               on_images: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Curate every pending shard of the run ``store``; yields each shard's marker as it lands.
    ``on_images(n)`` hears of images as workers finish batches (for a progress bar).

    Its own scheduler over a set of actors: a shard whose worker dies (process killed, node lost)
    goes back to the queue, and a replacement worker starts; it takes shards once it is up, so a
    replacement that cannot be placed (the lost node's resources) never holds up the run. Shards
    are idempotent (a completed one is skipped, writes are atomic), so a resubmitted shard never
    duplicates rows."""
    pending = store.pending()
    if not pending:
        return
    init_ray()
    n, gpus = worker_count(res, len(pending))
    # the progress counter lives on the driver's node: it goes when the driver goes, not with a worker node
    here = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    progress = Progress.options(scheduling_strategy=here).remote() if on_images else None
    t = res.threads_per_worker

    def start():
        return CurateStage.options(num_cpus=t, num_gpus=gpus).remote(store, allow_download, gpus > 0, t)

    queue = deque(pending)
    idle = [start() for _ in range(n)]
    running: dict = {}  # task -> (actor, shard)
    starting: dict = {}  # readiness probe -> replacement actor
    lost = 0
    try:
        while queue or running:
            while idle and queue:
                actor, shard = idle.pop(), queue.popleft()
                running[actor.run.remote(shard, res, progress)] = (actor, shard)
            done, _ = ray.wait([*running, *starting], num_returns=1, timeout=1.0)
            for ref in done:
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        ray.get(ref)
                        idle.append(actor)
                    except ray.exceptions.RayActorError:  # the replacement died too: another one
                        fresh = start()
                        starting[fresh.__ray_ready__.remote()] = fresh
                    continue
                actor, shard = running.pop(ref)
                try:
                    marker = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    lost += 1
                    if lost > MAX_LOST:
                        raise
                    log.warning("worker lost on shard %d (%s): shard requeued, a replacement starts",
                                shard, type(exc).__name__)
                    queue.appendleft(shard)
                    fresh = start()
                    starting[fresh.__ray_ready__.remote()] = fresh
                    continue
                idle.append(actor)
                yield marker
            if on_images:
                on_images(_take(progress))
        if on_images:  # reports still in flight when the last shard landed
            on_images(_take(progress))
    except BaseException:
        for a in [*idle, *(a for a, _ in running.values()), *starting.values()]:
            ray.kill(a)
        raise
    # done: the workers exit gracefully when their handles go out of scope (ray.kill's SIGTERM
    # makes each print a stack dump); replacements still waiting for room are cancelled
    for a in starting.values():
        ray.kill(a)
    del idle, running, starting


def _take(progress) -> int:
    """Images reported since the last call; 0 when the progress actor was lost with its node."""
    try:
        return ray.get(progress.take.remote(), timeout=10)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return 0


# one thread per task: numpy's BLAS and faiss's OpenMP otherwise take every core in each task
ONE_THREAD = {"env_vars": {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}


@ray.remote(max_retries=3, runtime_env=ONE_THREAD)
def _call(fn: Callable, item):
    return fn(item)


def ray_map(fn: Callable, items: list) -> list:
    """``[fn(i) for i in items]`` as Ray tasks, one CPU each (the scoring's steps: each a
    partition, idempotent, so a task lost with its node is simply run again). In process when
    there is at most one item and no Ray yet: no cluster to start for a small run. Once Ray runs
    (a big run), a lone task goes to a worker too: the centers task of 1M identities holds their
    index, which the driver never should (it peaked at 5.8 GB running it at 10M faces)."""
    if len(items) <= 1 and not ray.is_initialized():
        return [fn(i) for i in items]
    init_ray()
    ref = ray.put(fn)
    return ray.get([_call.remote(ref, i) for i in items])
