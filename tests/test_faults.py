"""Crashes and resume through the real flow (Prefect + Ray, subprocesses): SIGKILL of the driver at
several points, SIGKILL of a Ray worker mid-shard, real disk-full and read-only output directories.
The 10-trial version is bench/faults.py."""

import os
import subprocess

import pytest

from curate.errors import OutputError
from curate.files import atomic_write, write_json
from curate.io.shards import ShardStore
from curate.testing import faults

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(sample_crawl, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "out")
    r = faults.run(str(sample_crawl), out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r


@pytest.mark.parametrize("after_markers", [0, 2])
def test_sigkill_of_the_driver_then_resume_equals_an_uninterrupted_run(reference, sample_crawl, tmp_path, after_markers):
    out = str(tmp_path / "out")
    at_kill, r = faults.kill_driver_then_resume(str(sample_crawl), out, after_markers)
    assert r.returncode == 0, r.stdout + r.stderr
    total = ShardStore(out).manifest["shards"]
    assert at_kill < total  # it really was interrupted
    got, want = faults.rows(out), faults.rows(reference[0])
    assert [g[0] for g in got] == list(range(len(want)))  # every item once: no duplicates, no gaps
    assert got == want  # same rows, reasons, decisions and embeddings
    assert not faults.leftovers(out)


def test_sigkill_of_an_in_process_run_then_resume_equals_the_flow(reference, sample_crawl, tmp_path):
    """The in-process engine (a small crawl's default) resumes the same way, with the flow's rows."""
    out = str(tmp_path / "out")
    at_kill, r = faults.kill_driver_then_resume(str(sample_crawl), out, 2, engine="local")
    assert r.returncode == 0, r.stdout + r.stderr
    assert at_kill < ShardStore(out).manifest["shards"] and "engine       local" in r.stdout
    got, want = faults.rows(out), faults.rows(reference[0])
    assert [g[0] for g in got] == list(range(len(want))) and got == want
    assert not faults.leftovers(out)


def test_killing_a_ray_worker_mid_shard_is_retried(reference, sample_crawl, tmp_path):
    out = str(tmp_path / "out")
    killed, proc, log = faults.kill_a_worker_mid_run(str(sample_crawl), out)
    assert killed, log
    assert proc.returncode == 0, log
    assert faults.rows(out) == faults.rows(reference[0])


def test_logs_hold_no_image_bytes_or_embeddings(reference):
    import re

    _, r = reference
    text = r.stdout + r.stderr
    assert not re.search(r"[A-Za-z0-9+/]{200,}", text)  # no base64 payloads
    assert "\\x" not in text and "b'\\xff\\xd8" not in text  # no raw bytes reprs
    assert not re.search(r"(-?\d\.\d{3,}[, ]+){32,}", text)  # no long float vectors


def _mount_tmpfs(path, *opts):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(opts), "tmpfs", str(path)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:80]})")
    return path


def test_real_disk_full_is_a_clear_error_and_no_corrupt_file(tmp_path):
    d = _mount_tmpfs(tmp_path / "small", "size=256k")
    try:
        with pytest.raises(OutputError, match="disk full"):
            atomic_write(str(d / "big.bin"), lambda tmp: open(tmp, "wb").write(os.urandom(1 << 20)))
        assert os.listdir(d) == []  # neither a partial file nor a temp file
    finally:
        subprocess.run(["umount", str(d)])


def test_real_read_only_output_is_a_clear_error(tmp_path, sample_crawl):
    d = _mount_tmpfs(tmp_path / "ro", "size=1m", "ro")
    try:
        with pytest.raises(OutputError, match="cannot write|Read-only"):
            write_json(str(d / "marker.json"), {"a": 1})
        from curate.config import RunConfig
        from curate.io.sources import open_source

        with pytest.raises(OutputError):
            ShardStore(str(d / "out")).open_run(open_source(str(sample_crawl)), RunConfig())
    finally:
        subprocess.run(["umount", str(d)])
