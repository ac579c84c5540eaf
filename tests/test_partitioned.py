"""Scoring partition by partition (curate.partitioned) equals scoring in memory
(curate.curation.score_table), resumes after a crash, and runs its steps on Ray."""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curate import partitioned as P
from curate import reviews as R
from curate.config import ScoreConfig
from curate.curation import READ
from curate.scoring import score_table
from curate.stages import dedup
from curate.testing.synth import EmbeddingCrawl

CFG = ScoreConfig()  # thresholds estimated from the run: the sample must be every face for equality


def write_crawl(tmp, n=4000, ids=160, shard_size=500, seed=3, **kw):
    crawl = EmbeddingCrawl(n, ids, dim=64, shard_size=shard_size, seed=seed, **kw)
    files = []
    os.makedirs(tmp / "images", exist_ok=True)
    for s in range(crawl.shards):
        f = str(tmp / "images" / f"part-{s:06d}-run.parquet")
        pq.write_table(crawl.shard(s), f)
        files.append((s, f))
    return crawl, files


def partitioned(tmp, files, part_rows, mapper=P.local_map, cfg=CFG, digest="d"):
    work = str(tmp / "_scoring" / digest)
    os.makedirs(tmp / "curated", exist_ok=True)
    w, calib, _ = P.score_partitioned(work, str(tmp), files, cfg, None, R.REVIEWS.empty_table(), digest, part_rows, mapper)
    plan = w.plan
    P.stream_outputs(w, str(tmp / f"scores-{digest}.parquet"), str(tmp / f"identities-{digest}.parquet"))
    return pq.read_table(tmp / f"scores-{digest}.parquet"), pq.read_table(tmp / f"identities-{digest}.parquet"), calib, plan


def assert_same(a: pa.Table, b: pa.Table, skip=()):
    assert a.column_names == b.column_names
    for name in a.column_names:
        if name in skip:
            continue
        x, y = a[name], b[name]
        if pa.types.is_floating(x.type):
            x, y = x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False)
            assert np.array_equal(np.isnan(x), np.isnan(y)), name
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-4, equal_nan=True, err_msg=name)
        else:
            assert x.to_pylist() == y.to_pylist(), name


@pytest.fixture(scope="module")
def crawl_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crawl")
    crawl, files = write_crawl(tmp)
    whole = pa.concat_tables([pq.read_table(f, columns=READ) for _, f in files])
    scores, identities, calib = score_table(whole, CFG)
    return crawl, files, (R.apply(scores, R.REVIEWS.empty_table()), identities, calib)


def test_partitions_equal_the_whole_run(crawl_files, tmp_path):
    crawl, files, (scores, identities, calib) = crawl_files
    got, got_ids, got_calib, plan = partitioned(tmp_path, files, part_rows=700)
    assert plan["partitions"] == 6 and len(plan["chunks"]) == 8 and plan["groups"] == 1
    assert len(set(got["image_id"].to_pylist())) == len(got) == crawl.n  # every row once
    assert_same(got, scores)
    assert_same(got_ids, identities)
    for k in ("far_angle", "dup_cos", "merge_cos", "run_impostor_angle_p1", "quality_signals"):
        assert got_calib[k] == calib[k], k
    reasons = set(got["reason"].to_pylist())  # the crawl exercises every decision
    assert {"ok", "no_face", "duplicate", "far_from_dominant"} <= reasons
    assert pc.any(pc.is_valid(got["merged_from"])).as_py()  # and a merge
    # curated shards: each spine shard's rows once, with their scores
    curated = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(str(tmp_path / "curated" / "*.parquet")))])
    assert sorted(curated["image_id"].to_pylist()) == sorted(scores["image_id"].to_pylist())
    assert not os.path.exists(tmp_path / "_scoring" / "d" / "never")


def test_search_groups_find_the_same_duplicates(crawl_files, tmp_path, monkeypatch):
    """Several duplicate-search groups (cells of a k-means on the sample), each searched with an
    IVF: the same clusters, whatever group a face's cell went to; identical bytes found across
    groups by their sha1."""
    crawl, files, (scores, _, _) = crawl_files
    monkeypatch.setattr(P, "GROUP_ROWS", 1000)
    monkeypatch.setattr(dedup, "EXACT_LIMIT", 300)  # IVF within each group, as at scale
    got, _, _, plan = partitioned(tmp_path, files, part_rows=700)
    assert plan["groups"] == 4
    want = scores.filter(pc.is_valid(scores["dup_of"]))["image_id"].to_pylist()
    found = set(got.filter(pc.is_valid(got["dup_of"]))["image_id"].to_pylist())
    assert len(found & set(want)) >= 0.97 * len(want) and len(found - set(want)) <= 0.03 * len(want)
    pairs = crawl.same_bytes & ~crawl.no_face
    pairs[pairs] &= ~crawl.no_face[crawl.src[pairs]]
    sims = got["dup_sim"].to_numpy(zero_copy_only=False)
    assert (sims[pairs] >= 0.9999).all() and (sims[crawl.src[pairs]] >= 0.9999).all()  # byte-identical, wherever its cell went
    assert_same(got, scores, skip=("dup_of", "dup_sim", "reason", "keep", "quality_rank", "auto_keep", "auto_reason"))


def test_copies_under_another_identity_are_found_across_search_groups(tmp_path, monkeypatch):
    """Re-saved copies filed under another identity, their 64-bit photo hash 1-2 bits away: each is
    in its photo's duplicate cluster, whatever search group either went to (the hash's bands meet
    in one bucket, with the embeddings' sketches)."""
    monkeypatch.setattr(P, "GROUP_ROWS", 1000)
    monkeypatch.setattr(dedup, "EXACT_LIMIT", 300)
    crawl, files = write_crawl(tmp_path, dups=0.05, cross=1.0)
    got, _, _, plan = partitioned(tmp_path, files, part_rows=700)
    assert plan["groups"] == 4
    ids, dup_of = (np.array(got[k].to_pylist(), object) for k in ("image_id", "dup_of"))
    root = np.where(dup_of == None, ids, dup_of)  # noqa: E711 - a cluster's rows point at the face that stays
    cross = np.flatnonzero(crawl.cross_copy & ~crawl.no_face & ~crawl.no_face[np.maximum(crawl.src, 0)])
    assert len(cross) >= 40 and (root[cross] == root[crawl.src[cross]]).all()


def test_a_killed_scoring_resumes_without_redoing_or_duplicating(crawl_files, tmp_path):
    crawl, files, (scores, _, _) = crawl_files
    calls = []

    def dies_in_decide(fn, items):
        out = []
        for i in items:
            if fn.func is P.decide and len([c for c in calls if c[0] == "decide"]) == 3:
                raise KeyboardInterrupt  # the process goes down in the middle of a step
            calls.append((fn.func.__name__, i))
            out.append(fn(i))
        return out

    with pytest.raises(KeyboardInterrupt):
        partitioned(tmp_path, files, part_rows=700, mapper=dies_in_decide)
    before = list(calls)
    calls.clear()
    got, _, _, _ = partitioned(tmp_path, files, part_rows=700, mapper=lambda fn, items: [
        calls.append((fn.func.__name__, i)) or fn(i) for i in items])
    assert not [c for c in calls if c[0] in ("split", "identities", "duplicates")]  # finished steps are not redone
    assert len([c for c in before if c[0] == "identities"]) == 6
    assert_same(got, scores)


def test_steps_run_on_ray(crawl_files, tmp_path):
    from flows.ray_exec import ray_map

    crawl, files, (scores, _, _) = crawl_files
    got, _, _, _ = partitioned(tmp_path, files, part_rows=1500, mapper=ray_map)
    assert_same(got, scores)
