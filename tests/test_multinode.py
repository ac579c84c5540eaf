"""A real two-node Ray cluster on one machine, started the way a user starts one (``ray start
--head``, then ``ray start --address`` for a second node with its own raylet and resources), a real
Prefect server (``prefect server start``), and the flow joined to both through RAY_ADDRESS and
PREFECT_API_URL. The worker node is killed mid-run: the run still finishes, every planned image
exactly once, and the server holds the completed flow run."""

import glob
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes(tag: str, extra=lambda cmd: True) -> list:
    """Processes whose command line holds ``tag`` (and passes ``extra``), with their children."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if tag in cmd and extra(cmd):
            found.append(p)
    kids = []
    for p in found:
        try:
            kids += p.children(recursive=True)
        except psutil.Error:
            pass
    return found + kids


def kill(procs: list) -> None:
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except Exception:  # gone already
            pass


def wait_for(check, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} within {seconds} s")


def test_worker_node_lost_mid_run_on_a_ray_start_cluster_with_a_prefect_server(sample_crawl, tmp_path):
    import httpx

    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's Unix socket paths have a length limit
    gcs, node_port, api_port = free_port(), free_port(), free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("RAY_ADDRESS", None)
    server = subprocess.Popen([os.path.join(BIN, "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                               str(api_port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{api_port}/api"
    try:
        ray = os.path.join(BIN, "ray")
        common = ["--num-cpus=1", "--disable-usage-stats"]
        subprocess.run([ray, "start", "--head", f"--port={gcs}", "--include-dashboard=false", f"--temp-dir={temp}",
                        *common], env=env, check=True, capture_output=True)
        subprocess.run([ray, "start", f"--address=127.0.0.1:{gcs}", f"--node-manager-port={node_port}", *common],
                       env=env, check=True, capture_output=True)

        def healthy():
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "the Prefect server answers")
        out = tmp_path / "run"
        p = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(sample_crawl), "--out", str(out),
                              "--shard-size", "4", "--workers", "2", "--no-progress", "--no-audit"],
                             env={**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}", "PREFECT_API_URL": api},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: glob.glob(str(out / "_completions" / "*.json")) or p.poll() is not None, 240,
                 "a first shard lands")
        landed = len(glob.glob(str(out / "_completions" / "*.json")))
        node = processes(temp, lambda cmd: f"--node_manager_port={node_port}" in cmd)
        assert node, "the worker node's raylet was not found"
        kill(node)  # the second node goes: its raylet and every worker it started
        output, _ = p.communicate(timeout=400)
        assert p.returncode == 0, output
        plan = pq.read_table(out / "index.parquet")
        shards = len(glob.glob(str(out / "_completions" / "*.json")))
        assert landed < shards, "the node was killed after the run had finished: nothing tested"
        # (usually the log says "worker lost on shard N": its shard went back to the queue; a worker
        # process that outlives its raylet long enough may also finish its shard first)
        images = pq.ParquetDataset(sorted(glob.glob(str(out / "images" / "*.parquet")))).read(columns=["item"])
        assert sorted(images["item"].to_pylist()) == sorted(plan["item"].to_pylist())  # none lost, none twice
        scores = pq.read_table(glob.glob(str(out / "scores" / "scores-*.parquet"))[0], columns=["image_id"])
        assert len(scores) == len(plan)
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        assert [r["state_type"] for r in runs if r.get("parent_task_run_id") is None] == ["COMPLETED"]
    finally:
        kill(processes(temp))
        server.terminate()
        server.wait(timeout=30)
