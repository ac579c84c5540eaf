"""300 fuzzed files made from real photos (curate/testing/fuzz.py, seeded) through `curate run` as a user
starts it: no crash, exit code 0, one row for every file in the spine and in the scores. The
10,000-file run is bench/fuzz.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from curate.io.shards import ShardStore
from curate.testing import fuzz

pytestmark = pytest.mark.slow


def test_300_fuzzed_files_give_a_row_each_and_no_crash(tmp_path, sample_crawl):
    crawl, out = tmp_path / "crawl", tmp_path / "out"
    files = fuzz.fuzzed_crawl(fuzz.photos_from(str(sample_crawl)), str(crawl), 300, seed=7)
    curate = os.path.join(os.path.dirname(sys.executable), "curate")
    r = subprocess.run([curate, "run", crawl, "--out", out, "--no-progress", "--no-audit"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
    store = ShardStore.of(str(out))
    images = [pq.read_table(f, columns=["source", "reason"]) for f in store.completed_files("images")]
    sources = [s for t in images for s in t["source"].to_pylist()]
    assert sorted(sources) == sorted(files)  # every file once
    scores = pq.read_table(store.scores_file(store.current_scoring()), columns=["image_id"])
    assert len(scores) == len(files)
