"""Crash drills shared by tests/test_faults.py and bench/faults.py: run ``curate run`` as a real
subprocess (Prefect + Ray by default; ``engine="local"``: in process), kill it (SIGKILL of the driver and everything it started, or of one Ray
worker mid-shard), resume, and compare the output with an uninterrupted run."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import psutil
import pyarrow.parquet as pq

CURATE = [sys.executable, "-m", "curate.cli"]


def command(crawl: str, out: str, shard_size: int = 8, workers: int = 2, engine: str = "flow") -> list[str]:
    return CURATE + ["run", crawl, "--out", out, "--shard-size", str(shard_size), "--workers", str(workers),
                     "--batch-size", "4", "--no-progress", "--engine", engine]


def env() -> dict:
    e = dict(os.environ)
    e.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", PREFECT_SERVER_ANALYTICS_ENABLED="false",
             DO_NOT_TRACK="1", PREFECT_LOGGING_LEVEL="WARNING")
    return e


def run(crawl: str, out: str, timeout: float = 400, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(command(crawl, out, **kw), env=env(), capture_output=True, text=True, timeout=timeout)


def markers(out: str) -> int:
    return len(glob.glob(os.path.join(out, "_completions", "*.json")))


def _tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process it started (as a crash or an OOM kill would)."""
    procs = _tree(pid)
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=20)


def start(crawl: str, out: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(command(crawl, out, **kw), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def wait_for(cond, timeout: float = 300, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def kill_driver_then_resume(crawl: str, out: str, after_markers: int, **kw) -> tuple[int, subprocess.CompletedProcess]:
    """SIGKILL the driver and all it started once ``after_markers`` shards are done (0: as soon as
    the plan exists), then rerun the same command. Returns (markers at the kill, the rerun)."""
    proc = start(crawl, out, **kw)
    ready = (lambda: markers(out) >= after_markers) if after_markers else (
        lambda: os.path.exists(os.path.join(out, "run.json")))
    wait_for(ready, proc=proc)
    at_kill = markers(out)
    kill_tree(proc.pid)
    proc.communicate()
    return at_kill, run(crawl, out, **kw)


def ray_workers(pid: int) -> list[psutil.Process]:
    out = []
    for p in _tree(pid):
        try:
            if "CurateStage" in " ".join(p.cmdline()) or p.name().startswith("ray::CurateStage"):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def kill_a_worker_mid_run(crawl: str, out: str, **kw) -> tuple[bool, subprocess.Popen, str]:
    """SIGKILL one Ray worker (an actor process) while shards are in flight; the run must go on."""
    proc = start(crawl, out, **kw)
    found = wait_for(lambda: markers(out) >= 1 and bool(ray_workers(proc.pid)), proc=proc)
    killed = False
    if found:
        try:
            ray_workers(proc.pid)[0].send_signal(signal.SIGKILL)
            killed = True
        except (psutil.NoSuchProcess, IndexError):
            pass
    try:
        log, _ = proc.communicate(timeout=400)
    finally:
        kill_tree(proc.pid)
    return killed, proc, log


def rows(out: str) -> list[tuple]:
    """The run's content, in plan order: (item, image_id, source, sha1, reason, keep, embedding)."""
    files = sorted(glob.glob(os.path.join(out, "images", "*.parquet")))
    t = pq.ParquetDataset(files).read(columns=["item", "image_id", "source", "sha1", "reason", "keep", "embedding"])
    return sorted(zip(*(t[c].to_pylist() for c in t.column_names)), key=lambda r: r[0])


def leftovers(out: str) -> list[str]:
    """Temp files a crash left behind (never visible to readers; removed when a run completes)."""
    return glob.glob(os.path.join(out, "**", ".*.tmp"), recursive=True)
